package podcert

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics of the signer. A nil *Metrics records nothing.
type Metrics struct {
	answers *prometheus.CounterVec
	latency prometheus.Histogram
}

// NewMetrics registers podtls_podcert_requests_total{result, reason} and
// podtls_podcert_issue_latency_seconds with reg (a second registration in
// the same process reuses the first collectors).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		answers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "podtls_podcert_requests_total",
			Help: "PodCertificateRequests of signer podtls.io/mesh answered, by result (issued, denied, failed) and reason.",
		}, []string{"result", "reason"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "podtls_podcert_issue_latency_seconds",
			Help:    "From a PodCertificateRequest's creation (whole seconds: the API's timestamp) to its certificate being written.",
			Buckets: []float64{0.25, 0.5, 1, 2, 5, 10, 30, 60, 300},
		}),
	}
	for _, c := range []prometheus.Collector{m.answers, m.latency} {
		if err := reg.Register(c); err != nil {
			var dup prometheus.AlreadyRegisteredError
			if !errors.As(err, &dup) {
				return nil, err
			}
			switch existing := dup.ExistingCollector.(type) {
			case *prometheus.CounterVec:
				m.answers = existing
			case prometheus.Histogram:
				m.latency = existing
			}
		}
	}
	return m, nil
}

func (m *Metrics) answered(result, reason string, latency time.Duration) {
	if m == nil {
		return
	}
	m.answers.WithLabelValues(result, reason).Inc()
	if result == "issued" {
		m.latency.Observe(max(latency, 0).Seconds())
	}
}

// Answers is the answer counter, for tests.
func (m *Metrics) Answers() *prometheus.CounterVec { return m.answers }
