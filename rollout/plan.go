// Package rollout restarts the workloads whose app loads its external
// certificate only at start (podtls.io/app-cert-reload: restart): after the
// ACME manager stored a new certificate, the owning Deployment, StatefulSet
// or DaemonSet is rolled, once per certificate, one workload at a time,
// the way `kubectl rollout restart` does (a pod-template annotation,
// podtls.io/restarted-for, holding the certificate's serial). Mesh
// certificates are never delivered with "restart" (the webhook refuses it).
package rollout

import (
	"slices"
	"strings"
	"time"
)

// Kinds of workloads rollout restarts.
const (
	KindDeployment  = "Deployment"
	KindStatefulSet = "StatefulSet"
	KindDaemonSet   = "DaemonSet"
)

// Workload names a restartable owner of pods.
type Workload struct {
	Kind, Namespace, Name string
}

func (w Workload) String() string {
	return strings.ToLower(w.Kind) + "/" + w.Namespace + "/" + w.Name
}

// Certificate is what the ACME manager stored: the leaf's serial and when.
type Certificate struct {
	Serial string
	Stored time.Time
}

// Pod is what the plan needs of a pod that asked for restarts.
type Pod struct {
	Name    string
	Created time.Time
	Owner   Workload // zero: no restartable owner
	// RestartedFor is the pod's podtls.io/restarted-for (from its template).
	RestartedFor string
}

// Plan returns the workloads to roll for cert: those with a pod that was
// created before the certificate was stored and was not started for it
// already. Each workload once, in the order of their names; pods without a
// restartable owner are left out (the webhook warned about them).
func Plan(cert Certificate, pods []Pod) []Workload {
	if cert.Serial == "" || cert.Stored.IsZero() {
		return nil // nothing issued yet
	}
	var out []Workload
	for _, p := range pods {
		if p.Owner == (Workload{}) || p.RestartedFor == cert.Serial || !p.Created.Before(cert.Stored) {
			continue
		}
		if !slices.Contains(out, p.Owner) {
			out = append(out, p.Owner)
		}
	}
	slices.SortFunc(out, func(a, b Workload) int { return strings.Compare(a.String(), b.String()) })
	return out
}
