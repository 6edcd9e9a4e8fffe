package inject

import (
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podtls/podtls/contract"
)

// BenchmarkMutate measures Decide+Parse+Inject on a typical annotated pod and
// reports the p50 and p99 latency of one mutation (target: p99 < 1 ms).
func BenchmarkMutate(b *testing.B) {
	cfg := testConfig()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "demo", Labels: map[string]string{contract.Inject: "enabled"}}}
	base := podWith(map[string]string{
		contract.Inbound:   "8443:8080",
		contract.Upstreams: "recommendation.demo.svc:8443@9001,billing.pay.svc:443@9002",
		contract.Allow:     "spiffe://cluster.local/ns/demo/sa/customer",
	})
	lat := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		pod := base.DeepCopy()
		start := time.Now()
		if _, err := Mutate(pod, ns, cfg); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds()), "p99-ns")
}
