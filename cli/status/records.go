package status

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/podtls/podtls/contract"
)

// Records is the state of one Service's DNS records, from its
// podtls.io/dns-records-status annotation (nil: not written yet).
type Records struct {
	Service string                   `json:"service"`
	State   *contract.DNSRecordState `json:"state,omitempty"`
}

// recordsOf is the records state of each Service selecting p that asks
// for DNS records.
func recordsOf(p *corev1.Pod, svcs []corev1.Service) []Records {
	var out []Records
	for _, svc := range svcs {
		if _, ok := svc.Annotations[contract.DNSRecords]; !ok || len(svc.Spec.Selector) == 0 ||
			!labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(p.Labels)) {
			continue
		}
		r := Records{Service: svc.Name}
		if st, err := contract.DecodeDNSRecordState(svc.Annotations[contract.DNSRecordsStatus]); err == nil {
			r.State = &st
		}
		out = append(out, r)
	}
	return out
}
