package webhook

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/podtls/podtls/webhook/inject"
)

var (
	admissions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "podtls_webhook_admissions_total",
		Help: "Pod admissions by result (injected, skipped, denied, error) and reason code.",
	}, []string{"result", "reason"})
	admissionDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "podtls_webhook_admission_duration_seconds",
		Help:    "Time spent deciding and mutating one pod, without HTTP and TLS.",
		Buckets: []float64{50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 50e-3},
	})
)

func init() {
	metrics.Registry.MustRegister(admissions, admissionDuration)
}

func observe(result string, reasons []inject.ReasonCode, start time.Time) {
	admissionDuration.Observe(time.Since(start).Seconds())
	if len(reasons) == 0 {
		admissions.WithLabelValues(result, "").Inc()
	}
	for _, r := range reasons {
		admissions.WithLabelValues(result, string(r)).Inc()
	}
}
