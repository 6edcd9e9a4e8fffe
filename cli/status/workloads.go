package status

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/podtls/podtls/cli/output"
	"github.com/podtls/podtls/contract"
)

// Workload is a registered machine outside Kubernetes (podtls workload
// register) and the last certificate the CA issued it.
type Workload struct {
	Namespace      string   `json:"namespace"`
	Name           string   `json:"name"`
	ServiceAccount string   `json:"serviceAccount"`
	Addresses      []string `json:"addresses,omitempty"`
	Ports          []string `json:"ports,omitempty"`
	// Certificate is nil until the machine joined.
	Certificate *contract.WorkloadCertState `json:"certificate,omitempty"`
	// JoinPending: a join token was issued and not used yet.
	JoinPending bool `json:"joinPending"`
}

// Workloads lists the registrations of namespace ("" for all).
func Workloads(ctx context.Context, kc kubernetes.Interface, namespace string) ([]Workload, error) {
	svcs, err := kc.CoreV1().Services(namespace).List(ctx, metav1.ListOptions{LabelSelector: contract.ExternalWorkload})
	if err != nil {
		return nil, fmt.Errorf("list workload registrations: %w", err)
	}
	var out []Workload
	for _, s := range svcs.Items {
		w := Workload{Namespace: s.Namespace, Name: s.Name, ServiceAccount: s.Annotations[contract.WorkloadServiceAccount]}
		for _, p := range s.Spec.Ports {
			w.Ports = append(w.Ports, fmt.Sprintf("%s=%d", p.Name, p.Port))
		}
		if v := s.Annotations[contract.WorkloadCertificate]; v != "" {
			var st contract.WorkloadCertState
			if json.Unmarshal([]byte(v), &st) == nil {
				w.Certificate = &st
			}
		}
		eps, err := kc.DiscoveryV1().EndpointSlices(s.Namespace).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + s.Name})
		if err == nil {
			for _, sl := range eps.Items {
				for _, e := range sl.Endpoints {
					w.Addresses = append(w.Addresses, e.Addresses...)
				}
			}
		}
		_, err = kc.CoreV1().Secrets(s.Namespace).Get(ctx, contract.WorkloadJoinSecretName(s.Name), metav1.GetOptions{})
		w.JoinPending = err == nil || (err != nil && !apierrors.IsNotFound(err) && !apierrors.IsForbidden(err))
		out = append(out, w)
	}
	slices.SortFunc(out, func(a, b Workload) int { return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name) })
	return out, nil
}

// WriteWorkloads renders the registrations as a table.
func WriteWorkloads(w io.Writer, ws []Workload, now time.Time) error {
	rows := make([][]string, 0, len(ws))
	for _, x := range ws {
		cert, via := "not joined", "-"
		if x.Certificate != nil {
			cert, via = remaining(x.Certificate.NotAfter, now), x.Certificate.Via
		}
		join := "used"
		if x.JoinPending {
			join = "pending"
		}
		rows = append(rows, []string{x.Namespace + "/" + x.Name, x.ServiceAccount, dash(strings.Join(x.Addresses, ",")), cert, via, join})
	}
	return output.Table(w, output.Width, []string{"WORKLOAD", "SERVICE-ACCOUNT", "ADDRESS", "CERT", "ISSUED-BY", "JOIN-TOKEN"}, rows)
}
