package inject

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podtls/podtls/contract"
	sidecarconfig "github.com/podtls/podtls/sidecar/options"
)

func podWith(ann map[string]string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "demo", Annotations: ann},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}}}
}

func TestParse(t *testing.T) {
	cfg := testConfig()
	tests := []struct {
		name    string
		ann     map[string]string
		want    contract.Spec
		wantErr []string // substrings, each must appear
	}{
		{name: "defaults", ann: nil, want: contract.Spec{Mode: "tcp", SidecarMode: contract.SidecarModeNative}},
		{name: "inbound list with blanks", ann: map[string]string{contract.Inbound: " 8443:8080 ,, 9443:9090"},
			want: contract.Spec{Mode: "tcp", SidecarMode: contract.SidecarModeNative, Inbound: []contract.PortMapping{{Listen: 8443, Target: 8080}, {Listen: 9443, Target: 9090}}}},
		{name: "inbound protocols", ann: map[string]string{contract.Inbound: "8443:8080/h2c, 8444:8081/http1,8445:8082/tcp,8446:8083"},
			want: contract.Spec{Mode: "tcp", SidecarMode: contract.SidecarModeNative, Inbound: []contract.PortMapping{
				{Listen: 8443, Target: 8080, Protocol: "h2c"}, {Listen: 8444, Target: 8081, Protocol: "http1"},
				{Listen: 8445, Target: 8082, Protocol: "tcp"}, {Listen: 8446, Target: 8083}}}},
		{name: "inbound unknown protocol", ann: map[string]string{contract.Inbound: "8443:8080/grpc"},
			wantErr: []string{contract.Inbound, `"8443:8080/grpc"`, "h2c"}},
		{name: "inbound empty protocol", ann: map[string]string{contract.Inbound: "8443:8080/"},
			wantErr: []string{contract.Inbound, `"8443:8080/"`}},
		{name: "inbound port 0", ann: map[string]string{contract.Inbound: "0:8080"},
			wantErr: []string{contract.Inbound, `"8443:8080,9443:9090"`}},
		{name: "inbound same port twice", ann: map[string]string{contract.Inbound: "8443:8080,8443:9090"},
			wantErr: []string{contract.Inbound, "already an inbound port"}},
		{name: "inbound on admin port", ann: map[string]string{contract.Inbound: "15000:8080"},
			wantErr: []string{"admin port"}},
		{name: "inbound listen equals target", ann: map[string]string{contract.Inbound: "8080:8080"},
			wantErr: []string{"app's own port"}},
		{name: "upstream with id", ann: map[string]string{contract.Upstreams: "Preference.demo.svc:8443@9001#spiffe://cluster.local/ns/demo/sa/preference"},
			want: contract.Spec{Mode: "tcp", SidecarMode: contract.SidecarModeNative, Upstreams: []contract.Upstream{{Host: "preference.demo.svc", Port: 8443, LocalPort: 9001, ID: "spiffe://cluster.local/ns/demo/sa/preference"}}}},
		{name: "upstream to one pod of a StatefulSet", ann: map[string]string{contract.Upstreams: "web-2.web.db.svc:8443@9002,WEB-0.web.db.svc.cluster.local.:8443@9003"},
			want: contract.Spec{Mode: "tcp", SidecarMode: contract.SidecarModeNative, Upstreams: []contract.Upstream{
				{Host: "web-2.web.db.svc", Port: 8443, LocalPort: 9002}, {Host: "web-0.web.db.svc.cluster.local", Port: 8443, LocalPort: 9003}}}},
		{name: "upstream bad id", ann: map[string]string{contract.Upstreams: "a.demo.svc:8443@9001#spiffe://x/y"},
			wantErr: []string{contract.Upstreams, "HOST:PORT@LOCALPORT"}},
		{name: "upstream public with tls://", ann: map[string]string{contract.Upstreams: "tls://api.stripe.com:443@9002"},
			want: contract.Spec{Mode: "tcp", SidecarMode: contract.SidecarModeNative, Upstreams: []contract.Upstream{{Host: "api.stripe.com", Port: 443, LocalPort: 9002, Public: true}}}},
		{name: "upstream public host without tls://", ann: map[string]string{contract.Upstreams: "api.stripe.com:443@9002"},
			wantErr: []string{contract.Upstreams, "not a cluster name", `"tls://api.stripe.com:443@9002"`}},
		{name: "upstream local port clash with inbound", ann: map[string]string{contract.Inbound: "9001:8080", contract.Upstreams: "a.demo.svc:8443@9001"},
			wantErr: []string{contract.Upstreams, "local port 9001"}},
		{name: "external hosts normalised", ann: map[string]string{contract.ExternalHosts: "B.example.com,a.example.com.,b.example.com"},
			want: contract.Spec{Mode: "tcp", SidecarMode: contract.SidecarModeNative, ExternalHosts: []string{"a.example.com", "b.example.com"},
				ExternalSecret: contract.ExternalSecretName([]string{"b.example.com", "a.example.com"})}},
		{name: "external host single label", ann: map[string]string{contract.ExternalHosts: "localhost"},
			wantErr: []string{contract.ExternalHosts, "fully qualified"}},
		{name: "dns name of another namespace", ann: map[string]string{contract.DNSNames: "x.other.svc"},
			wantErr: []string{contract.DNSNames, `namespace "demo"`}},
		{name: "dns name of a pod is the CA's to add", ann: map[string]string{contract.DNSNames: "web-0.web.demo.svc"},
			wantErr: []string{contract.DNSNames, "added to the certificate by the CA"}},
		{name: "dns name wildcard", ann: map[string]string{contract.DNSNames: "*.demo.svc"},
			wantErr: []string{contract.DNSNames}},
		{name: "allow", ann: map[string]string{contract.Allow: "spiffe://cluster.local/ns/demo/*"},
			want: contract.Spec{Mode: "tcp", SidecarMode: contract.SidecarModeNative, Allow: []string{"spiffe://cluster.local/ns/demo/*"}}},
		{name: "allow bad", ann: map[string]string{contract.Allow: "demo/customer"},
			wantErr: []string{contract.Allow, "spiffe://"}},
		{name: "mode http", ann: map[string]string{contract.Mode: "http"},
			want: contract.Spec{Mode: "http", SidecarMode: contract.SidecarModeNative}},
		{name: "mode bad", ann: map[string]string{contract.Mode: "HTTP"}, wantErr: []string{contract.Mode, `"tcp" or "http"`}},
		{name: "access log on", ann: map[string]string{contract.AccessLog: " true "},
			want: contract.Spec{Mode: "tcp", SidecarMode: contract.SidecarModeNative, AccessLog: true}},
		{name: "access log off", ann: map[string]string{contract.AccessLog: "false"},
			want: contract.Spec{Mode: "tcp", SidecarMode: contract.SidecarModeNative}},
		{name: "access log bad", ann: map[string]string{contract.AccessLog: "yes"},
			wantErr: []string{contract.AccessLog, `got "yes"`, `"true" or "false" (the default)`}},
		{name: "ttl", ann: map[string]string{contract.CertTTL: "36h"},
			want: contract.Spec{Mode: "tcp", SidecarMode: contract.SidecarModeNative, CertTTL: 36 * time.Hour}},
		{name: "ttl too short", ann: map[string]string{contract.CertTTL: "59m"}, wantErr: []string{contract.CertTTL, "between 1h and 168h"}},
		{name: "ttl too long", ann: map[string]string{contract.CertTTL: "169h"}, wantErr: []string{contract.CertTTL}},
		{name: "ttl garbage", ann: map[string]string{contract.CertTTL: "1 day"}, wantErr: []string{contract.CertTTL, "not a duration"}},
		{name: "sidecar mode legacy", ann: map[string]string{contract.SidecarMode: "legacy"},
			want: contract.Spec{Mode: "tcp", SidecarMode: contract.SidecarModeLegacy}},
		{name: "too long", ann: map[string]string{contract.Allow: strings.Repeat("a", contract.MaxAnnotationLen+1)},
			wantErr: []string{contract.Allow, "bytes"}},
		{name: "all errors reported", ann: map[string]string{contract.Mode: "x", contract.CertTTL: "x"},
			wantErr: []string{contract.Mode, contract.CertTTL}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := podWith(tt.ann)
			before := pod.DeepCopy()
			got, _, err := Parse(pod, "demo", cfg)
			if d := cmp.Diff(before, pod); d != "" {
				t.Fatalf("Parse changed the pod:\n%s", d)
			}
			if len(tt.wantErr) > 0 {
				if err == nil {
					t.Fatalf("want error containing %q, got spec %+v", tt.wantErr, got)
				}
				for _, s := range tt.wantErr {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q does not contain %q", err, s)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("spec (-want +got):\n%s", d)
			}
		})
	}
}

func TestExternalSecretName(t *testing.T) {
	a := contract.ExternalSecretName([]string{"b.example.com", "A.example.com."})
	b := contract.ExternalSecretName([]string{"a.example.com", "b.example.com", "b.example.com"})
	if a != b {
		t.Errorf("same host set, different names: %s %s", a, b)
	}
	if c := contract.ExternalSecretName([]string{"a.example.com"}); c == a {
		t.Errorf("different host sets share %s", c)
	}
	if !strings.HasPrefix(a, "podtls-ext-") || len(a) != len("podtls-ext-")+16 {
		t.Errorf("unexpected form %q", a)
	}
}

func TestDecide(t *testing.T) {
	cfg := testConfig()
	ns := func(name, label string) *corev1.Namespace {
		n := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
		if label != "" {
			n.Labels = map[string]string{contract.Inject: label}
		}
		return n
	}
	tests := []struct {
		name    string
		ns      *corev1.Namespace
		podAnn  string // "" = unset
		hostNet bool
		inject  bool
		reason  ReasonCode
		invalid bool
	}{
		{"label enabled", ns("demo", "enabled"), "", false, true, ReasonNamespaceEnabled, false},
		{"label enabled pod false", ns("demo", "enabled"), "false", false, false, ReasonPodDisabled, false},
		{"no label pod true", ns("demo", ""), "true", false, true, ReasonPodEnabled, false},
		{"label disabled pod true", ns("demo", "disabled"), "true", false, true, ReasonPodEnabled, false},
		{"label disabled", ns("demo", "disabled"), "", false, false, ReasonNamespaceDisabled, false},
		{"no label", ns("demo", ""), "", false, false, ReasonNotEnabled, false},
		{"unknown namespace", nil, "", false, false, ReasonNotEnabled, false},
		{"label typo", ns("demo", "on"), "", false, false, ReasonInvalidNamespaceVal, false},
		{"pod value typo", ns("demo", "enabled"), "True", false, false, ReasonInvalidInject, true},
		{"kube-system", ns("kube-system", "enabled"), "true", false, false, ReasonSystemNamespace, false},
		{"kube-public", ns("kube-public", ""), "true", false, false, ReasonSystemNamespace, false},
		{"kube-node-lease", ns("kube-node-lease", ""), "true", false, false, ReasonSystemNamespace, false},
		{"controller ns", ns("podtls-system", "enabled"), "true", false, false, ReasonControllerNamespace, false},
		{"host network", ns("demo", "enabled"), "", true, false, ReasonHostNetwork, false},
		{"host network not asked", ns("demo", ""), "", true, false, ReasonNotEnabled, false},
		{"no listeners", ns("demo", "enabled"), "", false, false, ReasonNoListeners, false},
		{"windows", ns("demo", "enabled"), "windows", false, false, ReasonWindowsPod, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := podWith(map[string]string{contract.Inbound: "8443:8080"})
			if tt.podAnn == "windows" {
				pod.Spec.NodeSelector = map[string]string{"kubernetes.io/os": "windows"}
			} else if tt.podAnn != "" {
				pod.Annotations[contract.Inject] = tt.podAnn
			}
			if tt.reason == ReasonNoListeners {
				delete(pod.Annotations, contract.Inbound)
			}
			pod.Spec.HostNetwork = tt.hostNet
			d := Decide(pod, tt.ns, cfg)
			if d.Inject != tt.inject || !d.Has(tt.reason) || d.Invalid != tt.invalid {
				t.Errorf("got %+v, want inject=%v reason=%s invalid=%v", d, tt.inject, tt.reason, tt.invalid)
			}
			if (tt.reason == ReasonHostNetwork || tt.reason == ReasonNoListeners || tt.reason == ReasonWindowsPod) && len(d.Warnings) == 0 {
				t.Errorf("%s skip must warn", tt.reason)
			}
		})
	}
}

// FuzzParse feeds arbitrary annotation values: Parse must not panic, and whatever
// it accepts must render into a pod that is then recognised as injected.
func FuzzParse(f *testing.F) {
	f.Add("8443:8080", "a.demo.svc:8443@9001#spiffe://cluster.local/ns/demo/sa/a", "shop.example.com", "spiffe://cluster.local/ns/demo/*", "x.demo.svc", "http", "24h")
	f.Add("8443:8080/h2c,8444:8081/tcp", "", "", "", "", "http", "")
	f.Add("1:2/,3:4/http1/h2c", "", "", "", "", "", "")
	f.Add("1:2,3:4", "x:1@2", "*.a.b", "spiffe://cluster.local/ns/a/sa/b", "a.demo.svc.cluster.local", "tcp", "1h")
	f.Add(":", "@#", "*", "/*", ".", "", "-1h")
	cfg := testConfig()
	f.Fuzz(func(t *testing.T, inbound, upstreams, hosts, allow, dns, mode, ttl string) {
		pod := podWith(map[string]string{
			contract.Inbound: inbound, contract.Upstreams: upstreams, contract.ExternalHosts: hosts,
			contract.Allow: allow, contract.DNSNames: dns, contract.Mode: mode, contract.CertTTL: ttl,
		})
		spec, _, err := Parse(pod, "demo", cfg)
		if err != nil {
			if !strings.Contains(err.Error(), "annotation "+contract.Prefix) {
				t.Fatalf("error does not name an annotation: %v", err)
			}
			return
		}
		if len(spec.Inbound)+len(spec.Upstreams) > 0 {
			// Whatever the webhook accepts, the sidecar must accept too.
			if _, err := sidecarconfig.Parse(Args(spec, cfg), io.Discard); err != nil {
				t.Fatalf("podtls-sidecar rejects rendered args %q: %v", Args(spec, cfg), err)
			}
		}
		if err := Inject(pod, spec, cfg); err != nil {
			t.Fatalf("Inject after successful Parse: %v", err)
		}
		if !HasSidecar(pod) {
			t.Fatal("injected pod has no sidecar")
		}
	})
}

// TestTimeoutsReachTheSidecar: the timeout annotations render into flags the
// sidecar parses back to the same values.
func TestTimeoutsReachTheSidecar(t *testing.T) {
	cfg := testConfig()
	spec, _, err := Parse(podWith(map[string]string{contract.Upstreams: "a.demo.svc:1@2",
		contract.IdleTimeout: "90m", contract.DrainTimeout: "1m30s"}), "demo", cfg)
	if err != nil {
		t.Fatal(err)
	}
	sc, err := sidecarconfig.Parse(Args(spec, cfg), io.Discard)
	if err != nil {
		t.Fatalf("sidecar rejects %q: %v", Args(spec, cfg), err)
	}
	if sc.IdleTimeout != 90*time.Minute || sc.DrainTimeout != 90*time.Second {
		t.Fatalf("sidecar runs with idle %s drain %s, want 1h30m0s 1m30s", sc.IdleTimeout, sc.DrainTimeout)
	}
}
