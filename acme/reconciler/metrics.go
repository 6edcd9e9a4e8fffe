package reconciler

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/types"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

var (
	ordersTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "podtls_acme_orders_total",
		Help: "ACME orders by result: success, failure, copied (a valid certificate for the same hosts taken from another namespace's Secret instead of a new order).",
	}, []string{"result"})
	orderDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "podtls_acme_order_duration_seconds",
		Help:    "Time one ACME order took (DNS-01 challenge, propagation, finalisation), successful or not.",
		Buckets: []float64{0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600},
	})
	expiry = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "podtls_acme_certificate_expiry_timestamp_seconds",
		Help: "Expiry (not-after, Unix seconds) of the certificate in each external-certificate Secret.",
	}, []string{"namespace", "secret"})
	failingGauge = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "podtls_acme_certificates_failing",
		Help: "External-certificate Secrets whose last attempt failed or was denied by policy.",
	})
	configOK = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "podtls_acme_config_ok",
		Help: "1 when the ACME configuration file was loaded and the issuer built, 0 when it is missing or invalid (the last good one stays in use).",
	})
)

func init() {
	ctrlmetrics.Registry.MustRegister(ordersTotal, orderDuration, expiry, failingGauge, configOK)
}

// failingSet tracks which Secrets are failing, for failingGauge.
type failingSet struct {
	mu  sync.Mutex
	set map[types.NamespacedName]bool
}

func (f *failingSet) mark(key types.NamespacedName, failing bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.set == nil {
		f.set = map[types.NamespacedName]bool{}
	}
	if failing {
		f.set[key] = true
	} else {
		delete(f.set, key)
	}
	failingGauge.Set(float64(len(f.set)))
}
