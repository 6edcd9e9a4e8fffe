package dnsrecords

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/podtls/podtls/contract"
	"github.com/podtls/podtls/internal/acmetest"
)

// TestPublisherOnBIND drives the publisher through a Service's life
// against a real BIND9: published, address changed, a hand-made name
// reported, BIND refusing the key (error, Event, nothing lost), the
// Service deleted and its records gone after the grace period.
func TestPublisherOnBIND(t *testing.T) {
	env := acmetest.StartT(t, acmetest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	zoneName := strings.TrimSuffix(env.Zone, ".")
	host, manual := "shop."+zoneName, "manual."+zoneName
	if err := env.AddRecord(ctx, manual, "A", "192.0.2.1"); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-1", Labels: map[string]string{"app": "web"},
		Annotations: map[string]string{contract.ExternalHosts: host + "," + manual}}}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web", Annotations: map[string]string{contract.DNSRecords: "true"}},
		Spec:   corev1.ServiceSpec{Selector: map[string]string{"app": "web"}},
		Status: corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{{IP: "198.51.100.7"}}}}}
	c := fake.NewClientBuilder().WithObjects(pod, svc).Build()
	zone := &RFC2136{Server: env.DNSAddr, Zone: env.Zone, KeyName: env.RecordsKeyName, Secret: env.RecordsKeySecret}
	now := time.Now()
	rec := record.NewFakeRecorder(20)
	var active Zone = zone
	p := &Publisher{Client: c, Recorder: rec, Now: func() time.Time { return now },
		Settings: func(context.Context) (Settings, bool, error) {
			return Settings{Zone: active, Name: zoneName, TTL: 30, Owner: "podtls-test", Grace: 10 * time.Minute}, true, nil
		}}
	lookup := func(n string) []string {
		got, _ := env.Lookup(ctx, n, "A")
		slices.Sort(got)
		return got
	}
	events := func() []string {
		var out []string
		for {
			select {
			case e := <-rec.Events:
				out = append(out, e)
			default:
				return out
			}
		}
	}

	if err := p.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got := lookup(host); !slices.Equal(got, []string{"198.51.100.7"}) {
		t.Fatalf("%s A %v", host, got)
	}
	if got := lookup(manual); !slices.Equal(got, []string{"192.0.2.1"}) {
		t.Fatalf("the hand-made record changed: %v", got)
	}
	if ev := strings.Join(events(), "\n"); !strings.Contains(ev, "Warning DNSRecordsConflict") || !strings.Contains(ev, manual+" A: a record nobody owns exists") {
		t.Fatalf("events %q", ev)
	}
	st := state(t, c, svc)
	if st.State != contract.DNSRecordsConflict || !slices.Equal(st.Records, []string{host + " 30 A 198.51.100.7"}) || !strings.Contains(st.Message, manual) {
		t.Fatalf("status %+v", st)
	}
	// A pass that changes nothing records no Event and keeps the status.
	if err := p.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if ev := events(); len(ev) != 0 || state(t, c, svc).Since != st.Since {
		t.Fatalf("a pass without change: events %q, status %+v", ev, state(t, c, svc))
	}

	// The load balancer's address changes.
	if err := c.Get(ctx, client.ObjectKeyFromObject(svc), svc); err != nil {
		t.Fatal(err)
	}
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "198.51.100.8"}}
	if err := c.Status().Update(ctx, svc); err != nil {
		t.Fatal(err)
	}
	if err := p.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got := lookup(host); !slices.Equal(got, []string{"198.51.100.8"}) {
		t.Fatalf("%s A %v after the change", host, got)
	}

	// BIND refuses the key: an error and an Event; then it is fixed.
	bad := *zone
	bad.Secret = "d3Jvbmcta2V5LXdyb25nLWtleQ=="
	active = &bad
	if err := p.Sync(ctx); err == nil {
		t.Fatal("a refused key went unnoticed")
	}
	if ev := strings.Join(events(), "\n"); !strings.Contains(ev, "Warning DNSRecordsFailed") {
		t.Fatalf("events %q", ev)
	}
	if st := state(t, c, svc); st.State != contract.DNSRecordsError || !strings.Contains(st.Message, "cannot read zone") || len(st.Records) != 1 {
		t.Fatalf("status %+v", st)
	}
	active = zone
	if err := p.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got := lookup(host); !slices.Equal(got, []string{"198.51.100.8"}) {
		t.Fatalf("%s A %v after the key was fixed", host, got)
	}

	// The Service goes: the record stays for the grace period, then goes with its owner.
	if err := c.Delete(ctx, svc); err != nil {
		t.Fatal(err)
	}
	if err := p.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if exp, ok := p.NextExpiry(); !ok || !exp.Equal(now.Add(10*time.Minute)) {
		t.Fatalf("next expiry %s %v, want the end of the grace period", exp, ok)
	}
	if got := lookup(host); len(got) != 1 {
		t.Fatalf("deleted before the grace period: %v", got)
	}
	now = now.Add(11 * time.Minute)
	if err := p.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got := lookup(host); len(got) != 0 {
		t.Fatalf("%s A %v after the grace period", host, got)
	}
	if got, _ := env.Lookup(ctx, "a-"+host, "TXT"); len(got) != 0 {
		t.Fatalf("owner TXT %v left behind", got)
	}
}

func state(t *testing.T, c client.Client, svc *corev1.Service) contract.DNSRecordState {
	t.Helper()
	var got corev1.Service
	if err := c.Get(context.Background(), client.ObjectKeyFromObject(svc), &got); err != nil {
		t.Fatal(err)
	}
	st, err := contract.DecodeDNSRecordState(got.Annotations[contract.DNSRecordsStatus])
	if err != nil {
		t.Fatal(err)
	}
	return st
}
