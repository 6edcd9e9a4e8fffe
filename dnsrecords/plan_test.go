package dnsrecords

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestOwnerFormat(t *testing.T) {
	// The same strings external-dns's TXT registry writes and reads.
	if got := OwnerName("shop.example.com", "A"); got != "a-shop.example.com" {
		t.Fatalf("OwnerName = %q", got)
	}
	if got := OwnerName("*.shop.example.com", "CNAME"); got != "cname-*.shop.example.com" {
		t.Fatalf("OwnerName wildcard = %q", got)
	}
	txt := OwnerText("podtls", "service/shop/web")
	if txt != `"heritage=external-dns,external-dns/owner=podtls,external-dns/resource=service/shop/web"` {
		t.Fatalf("OwnerText = %s", txt)
	}
	for _, in := range []string{txt, strings.Trim(txt, `"`)} {
		if o, r, ok := ParseOwnerText(in); !ok || o != "podtls" || r != "service/shop/web" {
			t.Fatalf("ParseOwnerText(%s) = %q %q %v", in, o, r, ok)
		}
	}
	for _, bad := range []string{`"v=spf1 -all"`, "heritage=someone-else,external-dns/owner=x", "heritage=external-dns", "heritage=external-dns,junk"} {
		if _, _, ok := ParseOwnerText(bad); ok {
			t.Fatalf("ParseOwnerText(%q) accepted", bad)
		}
	}
}

func TestCompute(t *testing.T) {
	now := time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC)
	o := Options{Owner: "podtls", Grace: 10 * time.Minute, Now: now}
	a := func(name string, ips ...string) Record { return Record{Name: name, Type: TypeA, Targets: ips, TTL: 60} }
	own := func(name, typ, owner, res string) Record {
		return Record{Name: OwnerName(name, typ), Type: TypeTXT, Targets: []string{OwnerText(owner, res)}, TTL: 60}
	}
	web := Desired{Record: a("shop.example.com", "10.0.0.7"), Resource: "service/shop/web"}
	tests := []struct {
		name      string
		desired   []Desired
		current   []Record
		unused    map[Key]time.Time
		want      Changes
		conflicts []string
		next      map[Key]time.Time
	}{
		{name: "new name: record and owner", desired: []Desired{web},
			want: Changes{Create: []Record{own("shop.example.com", "A", "podtls", "service/shop/web"), a("shop.example.com", "10.0.0.7")}}},
		{name: "ours and current: nothing", desired: []Desired{web},
			current: []Record{a("shop.example.com", "10.0.0.7"), own("shop.example.com", "A", "podtls", "service/shop/web")}},
		{name: "ours, address changed: update", desired: []Desired{web},
			current: []Record{a("shop.example.com", "10.0.0.9"), own("shop.example.com", "A", "podtls", "service/shop/web")},
			want:    Changes{Update: []Record{a("shop.example.com", "10.0.0.7")}}},
		{name: "made by hand: left alone, reported", desired: []Desired{web},
			current:   []Record{a("shop.example.com", "192.0.2.1")},
			conflicts: []string{"shop.example.com/A: a record nobody owns exists"}},
		{name: "external-dns's: left alone, reported", desired: []Desired{web},
			current:   []Record{a("shop.example.com", "192.0.2.1"), own("shop.example.com", "A", "default", "ingress/x/y")},
			conflicts: []string{"shop.example.com/A: owned by default"}},
		{name: "a CNAME someone made blocks an A", desired: []Desired{web},
			current:   []Record{{Name: "shop.example.com", Type: TypeCNAME, Targets: []string{"lb.example.net"}, TTL: 60}},
			conflicts: []string{"shop.example.com/A: the name holds a record of another type"}},
		{name: "two resources, one name: the first by name wins", desired: []Desired{{Record: a("shop.example.com", "10.0.0.8"), Resource: "service/zoo/web"}, web},
			want:      Changes{Create: []Record{own("shop.example.com", "A", "podtls", "service/shop/web"), a("shop.example.com", "10.0.0.7")}},
			conflicts: []string{"shop.example.com/A: another resource claims this name first"}},
		{name: "no longer wanted: kept during the grace period",
			current: []Record{a("old.example.com", "10.0.0.5"), own("old.example.com", "A", "podtls", "service/shop/old")},
			next:    map[Key]time.Time{{"old.example.com", TypeA}: now}},
		{name: "no longer wanted, grace over: record and owner deleted",
			current: []Record{a("old.example.com", "10.0.0.5"), own("old.example.com", "A", "podtls", "service/shop/old")},
			unused:  map[Key]time.Time{{"old.example.com", TypeA}: now.Add(-11 * time.Minute)},
			want:    Changes{Delete: []Record{own("old.example.com", "A", "podtls", "service/shop/old"), a("old.example.com", "10.0.0.5")}}},
		{name: "wanted again within the grace period: nothing pending",
			desired: []Desired{web},
			current: []Record{a("shop.example.com", "10.0.0.7"), own("shop.example.com", "A", "podtls", "service/shop/web")},
			unused:  map[Key]time.Time{{"shop.example.com", TypeA}: now.Add(-time.Minute)}},
		{name: "someone else's orphan is not ours to delete",
			current: []Record{a("x.example.com", "10.0.0.5"), own("x.example.com", "A", "default", "service/a/b")},
			unused:  map[Key]time.Time{{"x.example.com", TypeA}: now.Add(-time.Hour)}},
		{name: "the record was deleted by hand: recreated",
			desired: []Desired{web},
			current: []Record{own("shop.example.com", "A", "podtls", "service/shop/web")},
			want:    Changes{Create: []Record{a("shop.example.com", "10.0.0.7")}}},
		{name: "names and targets normalized", desired: []Desired{{Record: Record{Name: "Shop.Example.com.", Type: TypeA, Targets: []string{"10.0.0.7", "10.0.0.7"}, TTL: 60}, Resource: "service/shop/web"}},
			current: []Record{a("shop.example.com", "10.0.0.7"), own("shop.example.com", "A", "podtls", "service/shop/web")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ch, conflicts, next := Compute(tt.desired, tt.current, tt.unused, o)
			norm := func(rs []Record) []Record {
				var out []Record
				for _, r := range rs {
					out = append(out, r.Normalize())
				}
				sortRecords(out)
				return out
			}
			want := Changes{Create: norm(tt.want.Create), Update: norm(tt.want.Update), Delete: norm(tt.want.Delete)}
			if !reflect.DeepEqual(ch, want) {
				t.Fatalf("changes\n got %+v\nwant %+v", ch, want)
			}
			var got []string
			for _, c := range conflicts {
				got = append(got, c.Key.Name+"/"+c.Key.Type+": "+c.Reason)
			}
			if len(got) != len(tt.conflicts) {
				t.Fatalf("conflicts %q, want %q", got, tt.conflicts)
			}
			for i := range got {
				if !strings.HasPrefix(got[i], tt.conflicts[i]) {
					t.Fatalf("conflict %q, want %q", got[i], tt.conflicts[i])
				}
			}
			if len(next) != len(tt.next) || (len(next) > 0 && !reflect.DeepEqual(next, tt.next)) {
				t.Fatalf("unused %v, want %v", next, tt.next)
			}
		})
	}
}

func FuzzOwnerText(f *testing.F) {
	f.Add("podtls", "service/shop/web")
	f.Add("", "")
	f.Add("a,b", "x=y")
	f.Fuzz(func(t *testing.T, owner, resource string) {
		txt := OwnerText(owner, resource)
		o, r, ok := ParseOwnerText(txt)
		clean := owner != "" && !strings.ContainsAny(owner+resource, ",=")
		if clean && (!ok || o != owner || r != resource) {
			t.Fatalf("%q %q -> %s -> %q %q %v", owner, resource, txt, o, r, ok)
		}
		_, _, _ = ParseOwnerText(owner) // never panics on arbitrary text
	})
}

func FuzzOwnedKey(f *testing.F) {
	f.Add("shop.example.com", "A")
	f.Add("x", "CNAME")
	f.Fuzz(func(t *testing.T, name, typ string) {
		if typ != TypeA && typ != TypeAAAA && typ != TypeCNAME {
			return
		}
		k, ok := ownedKey(OwnerName(name, typ))
		if !ok || k != (Key{name, typ}) {
			t.Fatalf("%q %q -> %q -> %v %v", name, typ, OwnerName(name, typ), k, ok)
		}
	})
}
