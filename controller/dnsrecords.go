package controller

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/podtls/podtls/acme/reconciler"
	"github.com/podtls/podtls/contract"
	"github.com/podtls/podtls/dnsrecords"
)

// dnsResync is how often the zone is compared with the Services even when
// nothing changed (someone may have edited it).
const dnsResync = time.Minute

// setupDNSRecords runs the DNS-records publisher (leader only) when an ACME
// issuer is configured: every change of a Service, a pod's external hosts
// or a node, and every minute, is one pass over every annotated Service.
// Its settings come from the issuer configuration's records section, its
// TSIG key from the DNS provider's credentials Secret.
func setupDNSRecords(mgr ctrl.Manager, acme *reconciler.Manager, kube kubernetes.Interface, namespace string, log *slog.Logger) error {
	p := &dnsrecords.Publisher{
		Client: mgr.GetClient(), Recorder: mgr.GetEventRecorderFor("podtls-controller"), Logger: log.With("component", "dns-records"),
		Settings: func(ctx context.Context) (dnsrecords.Settings, bool, error) {
			cfg, ok := acme.CurrentConfig()
			if !ok || !cfg.Records.Enabled {
				return dnsrecords.Settings{}, false, nil
			}
			var creds map[string][]byte
			if ref := cfg.DNS.CredentialsSecretRef; ref != nil {
				sec, err := kube.CoreV1().Secrets(namespace).Get(ctx, ref.Name, metav1.GetOptions{})
				if err != nil {
					return dnsrecords.Settings{}, false, fmt.Errorf("DNS credentials Secret %s/%s: %w", namespace, ref.Name, err)
				}
				creds = sec.Data
			}
			zone, err := dnsrecords.RFC2136FromProvider(cfg.Records.Zone, cfg.DNS.Config, creds)
			if err != nil {
				return dnsrecords.Settings{}, false, fmt.Errorf("records: %w", err)
			}
			return dnsrecords.Settings{Zone: zone, Name: cfg.Records.Zone, TTL: cfg.Records.TTL, Owner: cfg.Records.OwnerID,
				Grace: cfg.Records.GracePeriod.Duration, Allowed: cfg.Allowed}, true, nil
		},
	}
	all := []reconcile.Request{{NamespacedName: types.NamespacedName{Name: "all"}}}
	everything := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request { return all })
	withHosts := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
		if _, ok := o.GetAnnotations()[contract.ExternalHosts]; ok {
			return all
		}
		return nil
	})
	return ctrl.NewControllerManagedBy(mgr).Named("dns-records").
		Watches(&corev1.Service{}, everything).
		Watches(&corev1.Pod{}, withHosts).
		Watches(&corev1.Node{}, everything).
		Complete(reconcile.Func(func(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
			if err := p.Sync(ctx); err != nil {
				return reconcile.Result{}, err // backoff by the controller's rate limiter
			}
			return reconcile.Result{RequeueAfter: dnsResync}, nil
		}))
}
