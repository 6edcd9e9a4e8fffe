package server

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/podtls/podtls/ca"
)

// metrics of the sign API. A nil *metrics records nothing.
type metrics struct {
	requests *prometheus.CounterVec
	duration prometheus.Histogram
}

// newMetrics registers the CA's metrics with reg (for example
// controller-runtime's metrics.Registry); nil reg means no metrics.
func newMetrics(reg prometheus.Registerer, a *ca.Authority) (*metrics, error) {
	if reg == nil {
		return nil, nil
	}
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "podtls_ca_sign_requests_total",
			Help: "Sign requests by HTTP status code.",
		}, []string{"code"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "podtls_ca_sign_duration_seconds",
			Help:    "Time to answer sign requests that were signed.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 12),
		}),
	}
	expiry := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "podtls_ca_intermediate_not_after_timestamp_seconds",
		Help: "Expiry of the CA's signing intermediate, Unix time; alert well before it.",
	}, func() float64 { return float64(a.IntermediateNotAfter().Unix()) })
	for _, c := range []prometheus.Collector{m.requests, m.duration, expiry} {
		if err := reg.Register(c); err != nil {
			var dup prometheus.AlreadyRegisteredError
			if errors.As(err, &dup) {
				// A second Server in the same process (tests run the
				// controller twice) counts into the registered collectors.
				switch existing := dup.ExistingCollector.(type) {
				case *prometheus.CounterVec:
					m.requests = existing
				case prometheus.Histogram:
					m.duration = existing
				}
				continue
			}
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	return m, nil
}

func (m *metrics) observe(code int, seconds float64) {
	if m == nil {
		return
	}
	m.requests.WithLabelValues(strconv.Itoa(code)).Inc()
	if code == 200 {
		m.duration.Observe(seconds)
	}
}
