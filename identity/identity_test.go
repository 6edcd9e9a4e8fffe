package identity

import (
	"net/url"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in      string
		want    ID
		wantErr string
	}{
		{in: "spiffe://cluster.local/ns/demo/sa/customer", want: ID{"cluster.local", "demo", "customer"}},
		{in: "spiffe://example.org/ns/a-b/sa/x.y", want: ID{"example.org", "a-b", "x.y"}},
		{in: "https://cluster.local/ns/demo/sa/x", wantErr: "must start with"},
		{in: "spiffe://cluster.local", wantErr: "missing path"},
		{in: "spiffe:///ns/demo/sa/x", wantErr: "trust domain is empty"},
		{in: "spiffe://Cluster.local/ns/demo/sa/x", wantErr: "not allowed"},
		{in: "spiffe://cluster.local:8080/ns/demo/sa/x", wantErr: "not allowed"},
		{in: "spiffe://user@cluster.local/ns/demo/sa/x", wantErr: "not allowed"},
		{in: "spiffe://cluster.local/ns/demo/sa/x/extra", wantErr: "path must be"},
		{in: "spiffe://cluster.local/ns/demo/sa/", wantErr: "empty"},
		{in: "spiffe://cluster.local/ns//sa/x", wantErr: "empty"},
		{in: "spiffe://cluster.local/sa/x/ns/demo", wantErr: "path must be"},
		{in: "spiffe://cluster.local/ns/demo/sa/x?q=1", wantErr: "character"},
		{in: "spiffe://cluster.local/ns/demo/sa/x#frag", wantErr: "character"},
		{in: "spiffe://cluster.local/ns/Demo/sa/x", wantErr: "character"},
		{in: "spiffe://cluster.local/ns/de%6do/sa/x", wantErr: "character"},
		{in: "spiffe://cluster.local/ns/-demo/sa/x", wantErr: "character"},
		{in: "spiffe://cluster.local/ns/demo/sa/..", wantErr: "empty"},
		{in: "spiffe://cluster.local/ns/" + strings.Repeat("a", 64) + "/sa/x", wantErr: "longer than 63"},
		{in: "spiffe://" + strings.Repeat("a", 2100), wantErr: "longer than 2048"},
	}
	for _, tt := range tests {
		t.Run(tt.in[:min(len(tt.in), 60)], func(t *testing.T) {
			got, err := Parse(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Parse(%q) error = %v, want containing %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Fatalf("Parse(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
			if got.String() != tt.in {
				t.Fatalf("round trip: %q != %q", got.String(), tt.in)
			}
			if got.URL().String() != tt.in {
				t.Fatalf("URL round trip: %q != %q", got.URL().String(), tt.in)
			}
		})
	}
}

func TestNewValidates(t *testing.T) {
	if _, err := New("cluster.local", "demo", "default"); err != nil {
		t.Fatal(err)
	}
	for _, bad := range [][3]string{{"", "demo", "sa"}, {"cluster.local", "", "sa"}, {"cluster.local", "demo", ""}, {"cluster.local", "de/mo", "sa"}} {
		if _, err := New(bad[0], bad[1], bad[2]); err == nil {
			t.Errorf("New(%q) succeeded, want error", bad)
		}
	}
}

func TestFromURL(t *testing.T) {
	u, err := url.Parse("spiffe://cluster.local/ns/demo/sa/customer")
	if err != nil {
		t.Fatal(err)
	}
	id, err := FromURL(u)
	if err != nil || id.ServiceAccount != "customer" {
		t.Fatalf("FromURL = %+v, %v", id, err)
	}
	if _, err := FromURL(nil); err == nil {
		t.Fatal("FromURL(nil) succeeded")
	}
}

func TestMatcher(t *testing.T) {
	tests := []struct {
		name     string
		patterns []string
		id       string
		want     bool
	}{
		{"default allows trust domain", nil, "spiffe://cluster.local/ns/a/sa/b", true},
		{"default denies other domain", nil, "spiffe://evil.local/ns/a/sa/b", false},
		{"default denies prefix trick", nil, "spiffe://cluster.localhost/ns/a/sa/b", false},
		{"exact", []string{"spiffe://cluster.local/ns/demo/sa/customer"}, "spiffe://cluster.local/ns/demo/sa/customer", true},
		{"exact other sa", []string{"spiffe://cluster.local/ns/demo/sa/customer"}, "spiffe://cluster.local/ns/demo/sa/other", false},
		{"exact is not prefix", []string{"spiffe://cluster.local/ns/demo/sa/customer"}, "spiffe://cluster.local/ns/demo/sa/customer2", false},
		{"namespace wildcard", []string{"spiffe://cluster.local/ns/demo/*"}, "spiffe://cluster.local/ns/demo/sa/x", true},
		{"namespace wildcard other ns", []string{"spiffe://cluster.local/ns/demo/*"}, "spiffe://cluster.local/ns/demo2/sa/x", false},
		{"several", []string{"spiffe://cluster.local/ns/a/sa/x", "spiffe://cluster.local/ns/b/*"}, "spiffe://cluster.local/ns/b/sa/y", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := NewMatcher("cluster.local", tt.patterns)
			if err != nil {
				t.Fatal(err)
			}
			if got := m.Allows(tt.id); got != tt.want {
				t.Fatalf("Allows(%q) = %v, want %v", tt.id, got, tt.want)
			}
		})
	}
	var nilMatcher *Matcher
	if nilMatcher.Allows("spiffe://cluster.local/ns/a/sa/b") {
		t.Fatal("nil matcher allowed an ID")
	}
}

func TestValidatePattern(t *testing.T) {
	for _, bad := range []string{"", "*", "spiffe://cluster.local/*/sa/x", "spiffe://cluster.local/ns/demo/sa/*x", "http://x/*", "spiffe://BAD/*", "spiffe://cluster.local/ns/demo"} {
		if err := ValidatePattern(bad); err == nil {
			t.Errorf("ValidatePattern(%q) succeeded, want error", bad)
		}
		if _, err := NewMatcher("cluster.local", []string{bad}); err == nil {
			t.Errorf("NewMatcher(%q) succeeded, want error", bad)
		}
	}
	for _, good := range []string{"spiffe://cluster.local/*", "spiffe://cluster.local/ns/demo/*", "spiffe://cluster.local/ns/demo/sa/customer"} {
		if err := ValidatePattern(good); err != nil {
			t.Errorf("ValidatePattern(%q): %v", good, err)
		}
	}
}

func TestNamespaceMayHoldDNSName(t *testing.T) {
	tests := []struct {
		ns, domain, name string
		want             bool
	}{
		{"demo", "", "preference.demo.svc", true},
		{"demo", "", "preference.demo.svc.cluster.local", true},
		{"demo", "", "Preference.demo.svc.", true},
		{"demo", "corp.internal", "preference.demo.svc.corp.internal", true},
		{"demo", "corp.internal", "preference.demo.svc.cluster.local", false},
		{"demo", "", "preference.other.svc", false},
		{"demo", "", "demo.svc", false},
		{"demo", "", ".demo.svc", false},
		{"demo", "", "a.b.demo.svc", false},
		{"demo", "", "*.demo.svc", false},
		{"demo", "", "preference.demo.svc.evil.com", false},
		{"demo", "", "shop.example.com", false},
		{"demo", "", "x.xdemo.svc", false},
	}
	for _, tt := range tests {
		if got := NamespaceMayHoldDNSName(tt.ns, tt.domain, tt.name); got != tt.want {
			t.Errorf("NamespaceMayHoldDNSName(%q, %q, %q) = %v, want %v", tt.ns, tt.domain, tt.name, got, tt.want)
		}
	}
}

func TestServiceDNSNames(t *testing.T) {
	got := ServiceDNSNames("preference", "demo", "")
	want := []string{"preference.demo.svc", "preference.demo.svc.cluster.local"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("ServiceDNSNames = %v, want %v", got, want)
	}
	for _, n := range got {
		if !NamespaceMayHoldDNSName("demo", "", n) {
			t.Errorf("namespace may not hold its own service name %q", n)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"spiffe://cluster.local/ns/demo/sa/customer", "spiffe://a/ns/b/sa/c", "spiffe://x/ns//sa/", "spiffe://%41/ns/a/sa/b", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := Parse(s)
		if err != nil {
			return
		}
		// Anything accepted must round-trip exactly and re-validate.
		if id.String() != s {
			t.Fatalf("accepted %q but renders %q", s, id.String())
		}
		if err := id.Validate(); err != nil {
			t.Fatalf("accepted %q but Validate: %v", s, err)
		}
		if id2, err := FromURL(id.URL()); err != nil || id2 != id {
			t.Fatalf("URL round trip of %q: %+v, %v", s, id2, err)
		}
	})
}

func FuzzMatcher(f *testing.F) {
	f.Add("spiffe://cluster.local/ns/demo/*", "spiffe://cluster.local/ns/demo/sa/x")
	f.Add("spiffe://cluster.local/ns/demo/sa/x", "spiffe://cluster.local/ns/demo/sa/x")
	f.Fuzz(func(t *testing.T, pattern, id string) {
		m, err := NewMatcher("cluster.local", []string{pattern})
		if err != nil {
			return
		}
		if m.Allows(id) {
			// An allowed ID is either the exact pattern or under its prefix. Patterns
			// are trimmed (annotation lists are written "a, b"): compare with that.
			pattern = strings.TrimSpace(pattern)
			prefix, wildcard := strings.CutSuffix(pattern, "*")
			if !(id == pattern || (wildcard && strings.HasPrefix(id, prefix))) {
				t.Fatalf("pattern %q allowed %q", pattern, id)
			}
		}
	})
}

func FuzzNamespaceMayHoldDNSName(f *testing.F) {
	f.Add("demo", "preference.demo.svc")
	f.Add("demo", "a.other.svc.cluster.local")
	f.Fuzz(func(t *testing.T, ns, name string) {
		if validateDNSLabel(ns) != nil {
			return
		}
		if NamespaceMayHoldDNSName(ns, "", name) {
			n := strings.TrimSuffix(strings.ToLower(name), ".")
			if !strings.HasSuffix(n, "."+ns+".svc") && !strings.HasSuffix(n, "."+ns+".svc.cluster.local") {
				t.Fatalf("namespace %q granted %q", ns, name)
			}
			if strings.Contains(n, "*") {
				t.Fatalf("wildcard granted: %q", name)
			}
		}
	})
}

func TestPodDNSNames(t *testing.T) {
	got, err := PodDNSNames("web-0", "web", "db", "example.internal")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"web-0.web.db.svc", "web-0.web.db.svc.example.internal"}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("PodDNSNames = %q, want %q", got, want)
	}
	for _, bad := range [][2]string{{"", "web"}, {"web-0", ""}, {"a.b", "web"}, {"web-0", "x.web"}, {"Web-0", "web"}, {"web-0", "-web"}} {
		if got, err := PodDNSNames(bad[0], bad[1], "db", ""); err == nil {
			t.Errorf("PodDNSNames(%q, %q) = %q, want an error", bad[0], bad[1], got)
		}
	}
}

// FuzzPodDNSNames: whatever hostname and subdomain a pod spec holds, the names
// are valid DNS names of exactly two labels in front of the namespace's svc
// suffix, so never a Service name of the namespace nor a name of another.
func FuzzPodDNSNames(f *testing.F) {
	f.Add("web-0", "web")
	f.Add("a.b", "c")
	f.Add("web-0", "web.other")
	f.Add("*", "web")
	f.Fuzz(func(t *testing.T, hostname, subdomain string) {
		names, err := PodDNSNames(hostname, subdomain, "demo", "")
		if err != nil {
			return
		}
		if len(names) != 2 {
			t.Fatalf("%d names: %q", len(names), names)
		}
		for _, n := range names {
			if err := ValidateDNSName(n); err != nil {
				t.Fatalf("invalid name %q: %v", n, err)
			}
			front, ok := strings.CutSuffix(n, ".demo.svc")
			if !ok {
				front, ok = strings.CutSuffix(n, ".demo.svc.cluster.local")
			}
			if !ok || strings.Count(front, ".") != 1 {
				t.Fatalf("name %q is not <hostname>.<subdomain>.demo.svc[.cluster.local]", n)
			}
			if NamespaceMayHoldDNSName("demo", "", n) {
				t.Fatalf("pod name %q collides with a Service name", n)
			}
		}
	})
}

func TestParsePodDNSName(t *testing.T) {
	for _, tc := range []struct {
		name, host, sub string
		ok              bool
	}{
		{"web-0.web.db.svc", "web-0", "web", true},
		{"WEB-0.Web.db.svc.cluster.local.", "web-0", "web", true},
		{"web-0.web.db.svc.example.internal", "", "", false}, // not the configured cluster domain
		{"web.db.svc", "", "", false},                        // a Service name
		{"a.web-0.web.db.svc", "", "", false},                // three labels
		{"web-0.web.other.svc", "", "", false},               // another namespace
		{"*.web.db.svc", "", "", false},
		{"web-0..db.svc", "", "", false},
	} {
		h, sub, ok := ParsePodDNSName("db", "", tc.name)
		if h != tc.host || sub != tc.sub || ok != tc.ok {
			t.Errorf("ParsePodDNSName(%q) = %q, %q, %v; want %q, %q, %v", tc.name, h, sub, ok, tc.host, tc.sub, tc.ok)
		}
	}
}

// FuzzParsePodDNSName: what parses renders back to the same name with
// PodDNSNames, and is never also a Service name of the namespace.
func FuzzParsePodDNSName(f *testing.F) {
	f.Add("db", "web-0.web.db.svc")
	f.Add("db", "WEB-0.web.db.svc.cluster.local.")
	f.Add("db", "a.b.c.db.svc")
	f.Fuzz(func(t *testing.T, ns, name string) {
		if validateDNSLabel(ns) != nil {
			return
		}
		h, sub, ok := ParsePodDNSName(ns, "", name)
		if !ok {
			return
		}
		names, err := PodDNSNames(h, sub, ns, "")
		if err != nil {
			t.Fatalf("ParsePodDNSName(%q) = %q, %q, which PodDNSNames refuses: %v", name, h, sub, err)
		}
		if n := strings.TrimSuffix(strings.ToLower(name), "."); n != names[0] && n != names[1] {
			t.Fatalf("ParsePodDNSName(%q) = %q, %q, renders as %q", name, h, sub, names)
		}
		if NamespaceMayHoldDNSName(ns, "", name) {
			t.Fatalf("%q is both a pod name and a Service name", name)
		}
	})
}
