package discovery

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics of the discovery API. A nil *metrics records nothing.
type metrics struct {
	requests *prometheus.CounterVec
	waiting  prometheus.Gauge
}

// newMetrics registers the discovery metrics with reg; nil reg means none.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	if reg == nil {
		return nil, nil
	}
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "podtls_discovery_requests_total",
			Help: "Endpoint discovery requests by HTTP status code (canceled: the client left during a long poll).",
		}, []string{"code"}),
		waiting: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "podtls_discovery_waiting_requests",
			Help: "Endpoint discovery long polls waiting for a change now.",
		}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.waiting} {
		if err := reg.Register(c); err != nil {
			var dup prometheus.AlreadyRegisteredError
			if !errors.As(err, &dup) {
				return nil, fmt.Errorf("register metrics: %w", err)
			}
			// A second Handler in the same process (tests run the
			// controller twice) counts into the registered collectors.
			switch existing := dup.ExistingCollector.(type) {
			case *prometheus.CounterVec:
				m.requests = existing
			case prometheus.Gauge:
				m.waiting = existing
			}
		}
	}
	return m, nil
}

func (m *metrics) request(code string) {
	if m != nil {
		m.requests.WithLabelValues(code).Inc()
	}
}

func (m *metrics) wait(delta float64) {
	if m != nil {
		m.waiting.Add(delta)
	}
}
