package inject

import (
	"io"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/podtls/podtls/contract"
	sidecarconfig "github.com/podtls/podtls/sidecar/options"
)

func TestEffectiveResources(t *testing.T) {
	tmpl := DefaultTemplate("x").Resources // 10m, 16Mi / 128Mi
	cases := []struct {
		name     string
		res      contract.Resources
		maxConns int
		want     map[string]string // "requests.cpu" -> quantity; "" = absent
		wantMax  int
		wantWarn string
		wantErr  []string
	}{
		{name: "defaults", want: map[string]string{"requests.cpu": "10m", "requests.memory": "16Mi", "limits.memory": "128Mi", "limits.cpu": ""}, wantMax: 568},
		{name: "cpu limit only", res: contract.Resources{CPULimit: "2"}, want: map[string]string{"limits.cpu": "2", "requests.cpu": "10m"}, wantMax: 568},
		{name: "all four", res: contract.Resources{CPURequest: "100m", CPULimit: "1", MemoryRequest: "64Mi", MemoryLimit: "1Gi"},
			want: map[string]string{"requests.cpu": "100m", "limits.cpu": "1", "requests.memory": "64Mi", "limits.memory": "1Gi"}, wantMax: 5347},
		{name: "decimal memory", res: contract.Resources{MemoryLimit: "100M"}, want: map[string]string{"limits.memory": "100M"}, wantMax: contract.MaxConnectionsFor(100e6)},
		{name: "request equals limit", res: contract.Resources{CPURequest: "1", CPULimit: "1000m"}, wantMax: 568},
		{name: "explicit max within model", res: contract.Resources{MemoryLimit: "256Mi"}, maxConns: 1000, wantMax: 1000},
		{name: "explicit max above model", res: contract.Resources{MemoryLimit: "64Mi"}, maxConns: 500, wantMax: 500, wantWarn: "raise podtls.io/sidecar-memory-limit to 116Mi"},
		{name: "explicit max above idle capacity", res: contract.Resources{MemoryLimit: "64Mi"}, maxConns: 683, wantErr: []string{"even idle (682 do)", "at least 150Mi"}},
		{name: "low cpu limit", res: contract.Resources{CPULimit: "99m", CPURequest: "10m"}, wantMax: 568, wantWarn: "CFS throttling"},
		{name: "cpu request above default-less limit", res: contract.Resources{CPURequest: "2", CPULimit: "1"}, wantErr: []string{"cpu request 2 (annotation podtls.io/sidecar-cpu-request) is above its limit 1"}},
		{name: "memory request above default limit", res: contract.Resources{MemoryRequest: "129Mi"}, wantErr: []string{"the controller's default; override with annotation podtls.io/sidecar-memory-limit"}},
		{name: "memory limit below minimum", res: contract.Resources{MemoryLimit: "31Mi", MemoryRequest: "8Mi"}, wantErr: []string{"memory limit 31Mi", "want at least 32Mi"}},
		{name: "memory limit at minimum", res: contract.Resources{MemoryLimit: "32Mi"}, wantMax: 56},
		{name: "cpu limit below minimum", res: contract.Resources{CPULimit: "9m", CPURequest: "1m"}, wantErr: []string{"cpu limit 9m", "want at least 10m"}},
		{name: "not a quantity", res: contract.Resources{CPULimit: "fast", MemoryLimit: "1Gb"}, wantErr: []string{"podtls.io/sidecar-cpu-limit: \"fast\" is not a quantity", "podtls.io/sidecar-memory-limit: \"1Gb\""}},
		{name: "negative", res: contract.Resources{MemoryRequest: "-1Mi"}, wantErr: []string{"is negative"}},
		{name: "memory limit beyond int64 bytes", res: contract.Resources{MemoryLimit: "9473372036852275807"}, wantErr: []string{"podtls.io/sidecar-memory-limit: \"9473372036852275807\" is too large", "want at most 9223372036854775807"}},
		{name: "memory limit at int64 bytes", res: contract.Resources{MemoryLimit: "9223372036854775807"}, wantMax: contract.MaxConnectionsFor(9223372036854775807)},
		{name: "cpu limit beyond int64 millicores", res: contract.Resources{CPULimit: "1e17"}, wantErr: []string{"podtls.io/sidecar-cpu-limit: \"1e17\" is too large"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, warns, err := EffectiveResources(contract.Spec{Resources: c.res, MaxConnections: c.maxConns}, tmpl)
			if len(c.wantErr) > 0 {
				if err == nil {
					t.Fatalf("no error, want %q", c.wantErr)
				}
				for _, w := range c.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not contain %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range c.want {
				list := got.Requirements.Requests
				if strings.HasPrefix(k, "limits.") {
					list = got.Requirements.Limits
				}
				q, ok := list[corev1.ResourceName(k[strings.Index(k, ".")+1:])]
				if v == "" && ok || v != "" && (!ok || q.String() != v) {
					t.Errorf("%s = %v (present %v), want %q", k, q.String(), ok, v)
				}
			}
			if got.MaxConnections != c.wantMax {
				t.Errorf("max connections %d, want %d", got.MaxConnections, c.wantMax)
			}
			if joined := strings.Join(warns, "\n"); c.wantWarn == "" && joined != "" || !strings.Contains(joined, c.wantWarn) {
				t.Errorf("warnings %q, want %q", joined, c.wantWarn)
			}
		})
	}
	// The template is not modified through the maps it shares.
	if _, ok := tmpl.Limits[corev1.ResourceCPU]; ok {
		t.Fatal("EffectiveResources wrote into the template")
	}
}

// TestMemoryFor: the smallest limit for n connections (n >= 2: MaxConnectionsFor
// never returns less than 1, so 1 fits any limit).
func TestMemoryFor(t *testing.T) {
	for _, n := range []int{2, 56, 57, 227, 500, 568, 1000, 5347, 100000} {
		s := memoryFor(n)
		mib, err := strconv.ParseInt(strings.TrimSuffix(s, "Mi"), 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		if contract.MaxConnectionsFor(mib<<20) < n || contract.MaxConnectionsFor((mib-1)<<20) >= n {
			t.Errorf("memoryFor(%d) = %s, not the smallest limit holding it", n, s)
		}
	}
}

// TestMaxConnectionsReachTheSidecar: the rendered flag is what the sidecar runs with.
func TestMaxConnectionsReachTheSidecar(t *testing.T) {
	cfg := testConfig()
	for ann, want := range map[string]int{"": 568, "64Mi": 227} {
		a := map[string]string{contract.Inbound: "8443:8080"}
		if ann != "" {
			a[contract.SidecarMemoryLimit] = ann
		}
		spec, _, err := Parse(podWith(a), "demo", cfg)
		if err != nil {
			t.Fatal(err)
		}
		sc, err := sidecarconfig.Parse(Args(spec, cfg), io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if sc.MaxConnections != want {
			t.Errorf("memory limit %q: sidecar runs with --max-connections %d, want %d", ann, sc.MaxConnections, want)
		}
	}
}

// FuzzResources feeds arbitrary resource annotations: whatever Parse accepts
// renders a container whose requests are at most its limits, whose memory
// limit is at least the minimum, and whose connection limit the sidecar accepts.
func FuzzResources(f *testing.F) {
	f.Add("10m", "1", "16Mi", "128Mi", "")
	f.Add("2", "1", "256Mi", "64Mi", "5000")
	f.Add("1e3", "-1", "0.5Gi", "1Ei", "1")
	f.Add("", "", "", "9223372036854775807", "1048576")
	f.Add("", "", "", "9473372036852275807", "") // once overflowed Value()
	cfg := testConfig()
	f.Fuzz(func(t *testing.T, cpuReq, cpuLim, memReq, memLim, maxConns string) {
		a := map[string]string{contract.Inbound: "8443:8080"}
		for k, v := range map[string]string{contract.SidecarCPURequest: cpuReq, contract.SidecarCPULimit: cpuLim,
			contract.SidecarMemoryRequest: memReq, contract.SidecarMemoryLimit: memLim, contract.MaxConnections: maxConns} {
			if v != "" {
				a[k] = v
			}
		}
		pod := podWith(a)
		spec, _, err := Parse(pod, "demo", cfg)
		if err != nil {
			if !strings.Contains(err.Error(), contract.Prefix) {
				t.Fatalf("error names no annotation: %v", err)
			}
			return
		}
		if err := Inject(pod, spec, cfg); err != nil {
			t.Fatalf("Inject after successful Parse: %v", err)
		}
		c := pod.Spec.InitContainers[0]
		for name, lim := range c.Resources.Limits {
			if req, ok := c.Resources.Requests[name]; ok && req.Cmp(lim) > 0 {
				t.Fatalf("%s request %s above limit %s", name, req.String(), lim.String())
			}
		}
		mem := c.Resources.Limits[corev1.ResourceMemory]
		if mem.Value() < contract.MinMemoryLimit {
			t.Fatalf("memory limit %s below the minimum", mem.String())
		}
		sc, err := sidecarconfig.Parse(c.Args, io.Discard)
		if err != nil {
			t.Fatalf("podtls-sidecar rejects rendered args %q: %v", c.Args, err)
		}
		if sc.MaxConnections < 1 {
			t.Fatalf("sidecar runs without a connection limit: %q", c.Args)
		}
	})
}
