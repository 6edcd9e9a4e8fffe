package mesh

import (
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

func TestSplitImage(t *testing.T) {
	for _, tt := range []struct {
		ref, repo, tag string
		ok             bool
	}{
		{"localhost/podtls/controller:e2e", "localhost/podtls/controller", "e2e", true},
		{"registry.example.org:5000/podtls/sidecar:v1.2.3", "registry.example.org:5000/podtls/sidecar", "v1.2.3", true},
		{"podtls-sidecar:dev", "podtls-sidecar", "dev", true},
		{"registry.example.org:5000/podtls/sidecar", "", "", false}, // the port is no tag
		{"podtls-sidecar", "", "", false},
		{"podtls-sidecar:", "", "", false},
		{"", "", "", false},
	} {
		repo, tag, err := splitImage(tt.ref)
		if (err == nil) != tt.ok || repo != tt.repo || tag != tt.tag {
			t.Errorf("splitImage(%q) = %q, %q, %v; want %q, %q, ok %v", tt.ref, repo, tag, err, tt.repo, tt.tag, tt.ok)
		}
	}
}

func TestHelmValues(t *testing.T) {
	in := Install{
		ControllerImage: "localhost/podtls/controller:e2e",
		SidecarImage:    "localhost/podtls/sidecar:e2e",
		PullPolicy:      corev1.PullNever,
		ExtraArgs:       []string{"--log-level=debug"},
		ACME:            map[string]any{"dns": map[string]any{"provider": "rfc2136"}},
		ACMECredentials: map[string]string{"RFC2136_TSIG_SECRET": "c2VjcmV0"},
		Values: map[string]any{
			"image":        map[string]any{"controller": map[string]any{"pullPolicy": "IfNotPresent"}},
			"replicaCount": 3,
		},
	}
	got, err := in.HelmValues()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"replicaCount": 3,
		"image": map[string]any{
			"controller": map[string]any{"repository": "localhost/podtls/controller", "tag": "e2e", "pullPolicy": "IfNotPresent"},
			"sidecar":    map[string]any{"repository": "localhost/podtls/sidecar", "tag": "e2e", "pullPolicy": "Never"},
		},
		"extraArgs": []any{"--log-level=debug"},
		"acme": map[string]any{
			"enabled":        true,
			"config":         map[string]any{"dns": map[string]any{"provider": "rfc2136"}},
			"dnsCredentials": map[string]any{"create": true, "stringData": map[string]any{"RFC2136_TSIG_SECRET": "c2VjcmV0"}},
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("HelmValues:\n got %#v\nwant %#v", got, want)
	}

	// Without ACME there is no acme key (the chart's default, off, applies), and at least
	// one replica.
	got, err = Install{ControllerImage: "c:1", SidecarImage: "s:1"}.HelmValues()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := got["acme"]; ok || got["replicaCount"] != int32(1) {
		t.Errorf("plain install values %v", got)
	}
	if _, err := (Install{ControllerImage: "c", SidecarImage: "s:1"}).HelmValues(); err == nil {
		t.Error("an image without a tag was accepted")
	}
}

// TestProxyAPIServer: requests under the random prefix reach the API server with the
// client's credentials; anything else is refused.
func TestProxyAPIServer(t *testing.T) {
	var gotPath, gotAuth string
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotPath, gotAuth = r.URL.Path, r.Header.Get("Authorization")
		_, _ = io.WriteString(w, `{"kind":"APIVersions","versions":["v1"]}`)
	}))
	defer api.Close()
	cs, err := kubernetes.NewForConfig(&rest.Config{Host: api.URL, BearerToken: "admin-token"})
	if err != nil {
		t.Fatal(err)
	}
	server, stop, err := proxyAPIServer(cs)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if !strings.HasPrefix(server, "http://127.0.0.1:") {
		t.Fatalf("proxy at %s, want loopback", server)
	}
	get := func(url string) int {
		t.Helper()
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get(server + "/api"); code != http.StatusOK || gotPath != "/api" || gotAuth != "Bearer admin-token" {
		t.Errorf("through the prefix: %d, API server saw path %q auth %q", code, gotPath, gotAuth)
	}
	gotPath = ""
	i := strings.LastIndexByte(server, '/')
	for _, u := range []string{server[:i] + "/api", server[:i] + "/", server + "x/api"} {
		if code := get(u); code != http.StatusForbidden || gotPath != "" {
			t.Errorf("GET %s: %d (API server saw %q), want 403 and nothing forwarded", u, code, gotPath)
		}
	}
}
