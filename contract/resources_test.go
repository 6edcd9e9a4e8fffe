package contract

import (
	"strings"
	"testing"
)

func TestMaxConnectionsFor(t *testing.T) {
	const mi = 1 << 20
	cases := []struct {
		limit      int64
		want, idle int
	}{
		{32 * mi, 56, 227},     // MinMemoryLimit
		{64 * mi, 227, 682},    // the old default limit
		{128 * mi, 568, 1592},  // the default limit
		{256 * mi, 1251, 3413}, // the 2,000 idle connections fit; 1,251 active ones do
		{1024 * mi, 5347, 14336},
		{8 * mi, 1, 0}, // below the base: refused at admission, never 0 (unlimited)
	}
	for _, c := range cases {
		if got := MaxConnectionsFor(c.limit); got != c.want {
			t.Errorf("MaxConnectionsFor(%d Mi) = %d, want %d", c.limit/mi, got, c.want)
		}
		if got := IdleConnectionsFor(c.limit); got != c.idle {
			t.Errorf("IdleConnectionsFor(%d Mi) = %d, want %d", c.limit/mi, got, c.idle)
		}
	}
	// The model itself: what the default allows, active, stays within the
	// headroom of the limit.
	for _, limit := range []int64{MinMemoryLimit, 64 * mi, 128 * mi, 4096 * mi} {
		n := int64(MaxConnectionsFor(limit))
		if used := ConnBaseBytes + n*ConnActiveBytes; used > limit*MemoryHeadroomPercent/100 {
			t.Errorf("limit %d Mi: %d active connections use %d Mi, beyond the headroom", limit/mi, n, used/mi)
		}
	}
}

func TestParseResources(t *testing.T) {
	cases := []struct {
		name    string
		ann     map[string]string
		want    Resources
		maxConn int
		wantErr []string
	}{
		{name: "none", ann: map[string]string{}},
		{name: "all", ann: map[string]string{SidecarCPURequest: " 50m ", SidecarCPULimit: "1", SidecarMemoryRequest: "32Mi",
			SidecarMemoryLimit: "256Mi", MaxConnections: "1000"},
			want: Resources{CPURequest: "50m", CPULimit: "1", MemoryRequest: "32Mi", MemoryLimit: "256Mi"}, maxConn: 1000},
		{name: "empty quantity", ann: map[string]string{SidecarCPULimit: " "}, wantErr: []string{SidecarCPULimit}},
		{name: "long quantity", ann: map[string]string{SidecarMemoryLimit: strings.Repeat("9", 40)}, wantErr: []string{SidecarMemoryLimit}},
		{name: "inner space", ann: map[string]string{SidecarMemoryRequest: "16 Mi"}, wantErr: []string{SidecarMemoryRequest}},
		{name: "max-connections zero", ann: map[string]string{MaxConnections: "0"}, wantErr: []string{MaxConnections, "between 1 and"}},
		{name: "max-connections word", ann: map[string]string{MaxConnections: "lots"}, wantErr: []string{MaxConnections}},
		{name: "max-connections huge", ann: map[string]string{MaxConnections: "99999999"}, wantErr: []string{MaxConnections}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			spec, _, err := Parse(c.ann, "demo", Defaults{TrustDomain: "cluster.local", ClusterDomain: "cluster.local", SidecarMode: SidecarModeNative})
			if len(c.wantErr) > 0 {
				if err == nil {
					t.Fatalf("no error, want %v", c.wantErr)
				}
				for _, w := range c.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not mention %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if spec.Resources != c.want || spec.MaxConnections != c.maxConn {
				t.Errorf("got %+v max %d, want %+v max %d", spec.Resources, spec.MaxConnections, c.want, c.maxConn)
			}
		})
	}
}
