package controller

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/controller"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/podtls/podtls/acme/reconciler"
	"github.com/podtls/podtls/dnsrecords"
	"github.com/podtls/podtls/dnsrecords/zones"
)

// dnsResync is how often the zone is compared with the Services even when
// nothing changed (someone may have edited it).
const dnsResync = time.Minute

// setupDNSRecords runs the DNS-records publisher (leader only) when an ACME
// issuer is configured: every change that can move a record (an annotated
// Service, a pod with external hosts, a node's addresses: dnsrecords.Relevant),
// the end of a grace period, and every minute, is one pass over every
// annotated Service.
// Its settings come from the issuer configuration's records section, its
// TSIG key from the DNS provider's credentials Secret.
func setupDNSRecords(mgr ctrl.Manager, acme *reconciler.Manager, kube kubernetes.Interface, namespace string, log *slog.Logger) error {
	cache := &zoneCache{}
	p := &dnsrecords.Publisher{
		Client: mgr.GetClient(), Recorder: mgr.GetEventRecorderFor("podtls-controller"), Logger: log.With("component", "dns-records"),
		Settings: func(ctx context.Context) (dnsrecords.Settings, bool, error) {
			cfg, ok := acme.CurrentConfig()
			if !ok || !cfg.Records.Enabled {
				return dnsrecords.Settings{}, false, nil
			}
			ref := cfg.Records.CredentialsSecretRef
			if ref == nil {
				ref = cfg.DNS.CredentialsSecretRef
			}
			var creds map[string][]byte
			if ref != nil {
				sec, err := kube.CoreV1().Secrets(namespace).Get(ctx, ref.Name, metav1.GetOptions{})
				if err != nil {
					return dnsrecords.Settings{}, false, fmt.Errorf("DNS records credentials Secret %s/%s: %w", namespace, ref.Name, err)
				}
				creds = sec.Data
			}
			zone, err := cache.get(ctx, cfg.DNS.Provider, cfg.Records.Zone, creds, cfg.DNS.Config)
			if err != nil {
				return dnsrecords.Settings{}, false, err
			}
			return dnsrecords.Settings{Zone: zone, Name: cfg.Records.Zone, TTL: cfg.Records.TTL, Owner: cfg.Records.OwnerID,
				Grace: cfg.Records.GracePeriod.Duration, Allowed: cfg.Allowed}, true, nil
		},
	}
	all := []reconcile.Request{{NamespacedName: types.NamespacedName{Name: "all"}}}
	enqueue := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request { return all })
	relevant := builder.WithPredicates(predicate.Funcs{
		CreateFunc:  func(e event.CreateEvent) bool { return dnsrecords.Relevant(nil, e.Object) },
		UpdateFunc:  func(e event.UpdateEvent) bool { return dnsrecords.Relevant(e.ObjectOld, e.ObjectNew) },
		DeleteFunc:  func(e event.DeleteEvent) bool { return dnsrecords.Relevant(nil, e.Object) },
		GenericFunc: func(event.GenericEvent) bool { return false },
	})
	return ctrl.NewControllerManagedBy(mgr).Named("dns-records").
		// A zone that fails (server down, key refused) is retried from 1 s,
		// doubling up to 2 minutes; the resync covers the rest.
		WithOptions(controller.TypedOptions[reconcile.Request]{
			RateLimiter: workqueue.NewTypedItemExponentialFailureRateLimiter[reconcile.Request](time.Second, 2*time.Minute),
		}).
		Watches(&corev1.Service{}, enqueue, relevant).
		Watches(&corev1.Pod{}, enqueue, relevant).
		Watches(&corev1.Node{}, enqueue, relevant).
		Complete(reconcile.Func(func(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
			if err := p.Sync(ctx); err != nil {
				return reconcile.Result{}, err // backoff by the controller's rate limiter
			}
			next := dnsResync
			if t, ok := p.NextExpiry(); ok {
				next = min(next, time.Until(t)+100*time.Millisecond)
			}
			return reconcile.Result{RequeueAfter: max(next, time.Second)}, nil
		}))
}

// zoneCache keeps the zone client while its settings stay the same: cloud
// clients find their zone ID once and keep their token.
type zoneCache struct {
	mu   sync.Mutex
	key  [sha256.Size]byte
	zone dnsrecords.Zone
}

func (c *zoneCache) get(ctx context.Context, provider, zone string, creds map[string][]byte, config map[string]string) (dnsrecords.Zone, error) {
	raw, err := json.Marshal([]any{provider, zone, creds, config})
	if err != nil {
		return nil, fmt.Errorf("records settings: %w", err)
	}
	key := sha256.Sum256(raw)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.zone != nil && c.key == key {
		return c.zone, nil
	}
	z, err := zones.New(ctx, provider, zone, creds, config)
	if err != nil {
		return nil, fmt.Errorf("records: %w", err)
	}
	c.key, c.zone = key, z
	return z, nil
}
