package certs

import (
	"github.com/podtls/podtls/sidecar/metrics"
)

func (s *Store) registerMetrics(r *metrics.Registry) {
	s.reloads = r.NewCounterVec("podtls_sidecar_cert_reloads_total",
		"Certificate reload attempts after a content change, by certificate and result (success, failure).", "cert", "result")
	r.NewGaugeFunc("podtls_sidecar_cert_expiry_seconds",
		"Seconds until the served certificate expires (negative once expired).", []string{"cert", "serial"}, func() []metrics.Sample {
			now := s.o.Now()
			var out []metrics.Sample
			for _, e := range s.served() {
				out = append(out, metrics.Sample{Labels: []string{e.name, e.cert.Leaf.SerialNumber.Text(16)}, Value: e.cert.Leaf.NotAfter.Sub(now).Seconds()})
			}
			return out
		})
	r.NewGaugeFunc("podtls_sidecar_cert_not_after_timestamp_seconds",
		"Expiry of the served certificate as a Unix timestamp.", []string{"cert"}, func() []metrics.Sample {
			var out []metrics.Sample
			for _, e := range s.served() {
				out = append(out, metrics.Sample{Labels: []string{e.name}, Value: float64(e.cert.Leaf.NotAfter.Unix())})
			}
			return out
		})
	r.NewGaugeFunc("podtls_sidecar_trust_roots", "Number of roots in the trust pool.", nil, func() []metrics.Sample {
		return []metrics.Sample{{Value: float64(len(s.TrustCertificates()))}}
	})
	r.NewGaugeFunc("podtls_sidecar_ready", "1 once a valid mesh certificate is loaded.", nil, func() []metrics.Sample {
		if s.Ready() {
			return []metrics.Sample{{Value: 1}}
		}
		return []metrics.Sample{{Value: 0}}
	})
}
