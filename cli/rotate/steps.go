package rotate

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/podtls/podtls/ca"
)

// Publish runs the first step: a new root beside the old one in every trust
// bundle. It returns the new root.
func Publish(ctx context.Context, kc kubernetes.Interface, o Options) (Root, error) {
	var next Root
	err := update(ctx, kc, o, func(data map[string][]byte) (map[string][]byte, error) {
		out, root, err := ca.RotationPublish(data, o.now())
		if err == nil {
			next = rootOf(root)
		}
		return out, err
	})
	return next, err
}

// Switch runs the second step: signing moves to an intermediate of the new
// root. It refuses while a trust bundle lacks the new root (a workload that
// does not trust it would refuse every new leaf), unless forced.
func Switch(ctx context.Context, kc kubernetes.Interface, o Options) error {
	rep, err := Collect(ctx, kc, Options{Namespace: o.Namespace, Secret: o.Secret})
	if err != nil {
		return err
	}
	if rep.Phase != ca.PhasePublished {
		return fmt.Errorf("nothing to switch to (phase %s): run publish first", rep.Phase)
	}
	if len(rep.Lagging) > 0 && !o.Force {
		return fmt.Errorf("not every trust bundle holds the new root yet (%s); the controller republishes within a minute and sidecars reload at once: run status, then switch again (--force skips this check)",
			strings.Join(rep.Lagging, ", "))
	}
	return update(ctx, kc, o, func(data map[string][]byte) (map[string][]byte, error) {
		return ca.RotationSwitch(data, o.now())
	})
}

// Retire runs the last step: the old roots leave the trust bundles. It
// refuses while a workload still serves a leaf of the old chain, or one
// cannot be read, unless forced: after the retire its peers would refuse it.
func Retire(ctx context.Context, kc kubernetes.Interface, o Options) ([]Root, error) {
	if o.AdminGet == nil && !o.Force {
		return nil, errors.New("retire checks every workload's leaf through the pod proxy; without it (--no-workloads) only --force retires")
	}
	rep, err := Collect(ctx, kc, o)
	if err != nil {
		return nil, err
	}
	if rep.Phase != ca.PhaseSwitched {
		return nil, fmt.Errorf("nothing to retire (phase %s)", rep.Phase)
	}
	if n := rep.Workloads["old"] + rep.Workloads["unknown"]; n > 0 && !o.Force {
		return nil, fmt.Errorf("%d workloads still serve a leaf of the old chain or could not be read (old: %s; unknown: %s); they move to the new chain at their next renewal (agent: 60-70%% of the lifetime, podCertificate: beginRefreshAt), or restart them; --force retires anyway",
			n, strings.Join(rep.OnOldChain, ", "), strings.Join(rep.Unknown, ", "))
	}
	var gone []Root
	err = update(ctx, kc, o, func(data map[string][]byte) (map[string][]byte, error) {
		out, roots, err := ca.RotationRetire(data)
		for _, r := range roots {
			gone = append(gone, rootOf(r))
		}
		return out, err
	})
	return gone, err
}

// update applies step to the CA Secret's data and writes it back with the
// resourceVersion it read, so a concurrent change (a controller renewing
// its intermediate) fails the step instead of being overwritten.
func update(ctx context.Context, kc kubernetes.Interface, o Options, step func(map[string][]byte) (map[string][]byte, error)) error {
	secrets := kc.CoreV1().Secrets(o.Namespace)
	sec, err := secrets.Get(ctx, o.Secret, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("read the CA Secret %s/%s: %w", o.Namespace, o.Secret, err)
	}
	data, err := step(sec.Data)
	if err != nil {
		return err
	}
	sec.Data = data
	if _, err := secrets.Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("write the CA Secret %s/%s: %w", o.Namespace, o.Secret, err)
	}
	return nil
}

func (o Options) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}
