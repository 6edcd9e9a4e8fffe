package dnsrecords

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/podtls/podtls/internal/acmetest"
)

// TestRFC2136OnBIND runs plans against a real BIND9 with TSIG: create,
// change, leave someone else's record alone, delete after the grace
// period leaving nothing behind, and a wrong key refused.
func TestRFC2136OnBIND(t *testing.T) {
	env := acmetest.StartT(t, acmetest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	zone := &RFC2136{Server: env.DNSAddr, Zone: env.Zone, KeyName: env.RecordsKeyName, Secret: env.RecordsKeySecret, Algorithm: env.TSIGAlgorithm}
	name := "shop." + strings.TrimSuffix(env.Zone, ".")
	other := "manual." + strings.TrimSuffix(env.Zone, ".")
	if err := env.AddRecord(ctx, other, "A", "192.0.2.1"); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	o := Options{Owner: "podtls-test", Grace: time.Minute, Now: now}
	var unused map[Key]time.Time
	pass := func(desired ...Desired) []Conflict {
		t.Helper()
		cur, err := zone.Records(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ch, conflicts, next := Compute(desired, cur, unused, o)
		unused = next
		if err := zone.Apply(ctx, ch); err != nil {
			t.Fatal(err)
		}
		return conflicts
	}
	lookup := func(n, typ string) []string {
		got, _ := env.Lookup(ctx, n, typ)
		slices.Sort(got)
		return got
	}

	pass(Desired{Record: Record{Name: name, Type: TypeA, Targets: []string{"10.0.0.7"}, TTL: 30}, Resource: "service/shop/web"})
	if got := lookup(name, "A"); !slices.Equal(got, []string{"10.0.0.7"}) {
		t.Fatalf("A %v after create", got)
	}
	if txt := lookup("a-"+name, "TXT"); len(txt) != 1 || !strings.Contains(txt[0], "external-dns/owner=podtls-test") {
		t.Fatalf("owner TXT %v", txt)
	}
	// The load balancer's address changes.
	pass(Desired{Record: Record{Name: name, Type: TypeA, Targets: []string{"10.0.0.8", "10.0.0.9"}, TTL: 30}, Resource: "service/shop/web"})
	if got := lookup(name, "A"); !slices.Equal(got, []string{"10.0.0.8", "10.0.0.9"}) {
		t.Fatalf("A %v after update", got)
	}
	// A name someone made by hand: reported, untouched.
	conflicts := pass(Desired{Record: Record{Name: name, Type: TypeA, Targets: []string{"10.0.0.8", "10.0.0.9"}, TTL: 30}, Resource: "service/shop/web"},
		Desired{Record: Record{Name: other, Type: TypeA, Targets: []string{"10.0.0.1"}, TTL: 30}, Resource: "service/shop/other"})
	if len(conflicts) != 1 || conflicts[0].Key.Name != other {
		t.Fatalf("conflicts %+v", conflicts)
	}
	if got := lookup(other, "A"); !slices.Equal(got, []string{"192.0.2.1"}) {
		t.Fatalf("someone else's record changed: %v", got)
	}
	// Nothing wants the name: kept for the grace period, then gone with its owner record.
	pass()
	if got := lookup(name, "A"); len(got) != 2 {
		t.Fatalf("deleted before the grace period: %v", got)
	}
	o.Now = now.Add(2 * time.Minute)
	pass()
	if got := lookup(name, "A"); len(got) != 0 {
		t.Fatalf("A %v after the grace period", got)
	}
	if got := lookup("a-"+name, "TXT"); len(got) != 0 {
		t.Fatalf("owner TXT %v left behind", got)
	}
	// A wrong key: refused with an error, nothing changed.
	bad := *zone
	bad.Secret = "c2VjcmV0LXRoYXQtaXMtd3Jvbmc="
	if _, err := bad.Records(ctx); err == nil {
		t.Fatal("zone transfer with a wrong key succeeded")
	}
	if err := bad.Apply(ctx, Changes{Create: []Record{{Name: name, Type: TypeA, Targets: []string{"10.0.0.66"}, TTL: 30}}}); err == nil {
		t.Fatal("update with a wrong key succeeded")
	}
}
