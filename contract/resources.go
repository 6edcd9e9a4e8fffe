package contract

import (
	"fmt"
	"strconv"
	"strings"
)

// The sidecar's memory model, measured with `make bench-memory` (a real
// podtls-sidecar, inbound mTLS in tcp mode, in-process clients; see
// docs/benchmarks.md for the numbers and how they were taken). The constants
// round the measured medians up.
const (
	// ConnBaseBytes is the resident memory of a sidecar before its first
	// connection plus the fixed part of the active line (Go runtime, TLS
	// configuration, metrics, GC headroom at zero connections).
	ConnBaseBytes = 16 << 20
	// ConnActiveBytes is the resident memory one connection adds while it
	// transfers (two 32 KiB copy buffers, TLS record buffers, two goroutine
	// stacks, the app-side socket), the worst case a full pod reaches.
	ConnActiveBytes = 144 << 10
	// ConnIdleBytes is the resident memory one open, idle connection adds.
	ConnIdleBytes = 72 << 10
	// MemoryHeadroomPercent of the memory limit is what the connections and
	// the base may use; the rest absorbs GC timing and handshake bursts.
	MemoryHeadroomPercent = 75
	// MinMemoryLimit is the smallest memory limit the webhook accepts: twice
	// the sidecar's resident memory at start (9.5 MB), and room for 56 active
	// connections within the headroom.
	MinMemoryLimit = 32 << 20
)

// MaxConnectionsFor is the sidecar's default --max-connections for a memory
// limit in bytes: as many active connections as fit in MemoryHeadroomPercent
// of the limit after the base, so a load opening more is refused at accept
// instead of the sidecar being OOM-killed with every connection through it.
// It returns at least 1; limits below MinMemoryLimit are refused before.
func MaxConnectionsFor(memoryLimit int64) int {
	usable := memoryLimit/100*MemoryHeadroomPercent - ConnBaseBytes
	return int(max(usable/ConnActiveBytes, 1))
}

// IdleConnectionsFor is how many idle connections fit in the whole memory
// limit: an explicit max-connections above it cannot work at all.
func IdleConnectionsFor(memoryLimit int64) int {
	return int(max((memoryLimit-ConnBaseBytes)/ConnIdleBytes, 0))
}

// Resources are the per-pod overrides of the sidecar's resources, as
// written: Kubernetes quantities the webhook parses (this package does not
// import Kubernetes). Empty: the controller's default.
type Resources struct {
	CPURequest    string `json:"cpuRequest,omitempty"`
	CPULimit      string `json:"cpuLimit,omitempty"`
	MemoryRequest string `json:"memoryRequest,omitempty"`
	MemoryLimit   string `json:"memoryLimit,omitempty"`
}

// maxQuantityLen bounds a resource annotation: real quantities are short.
const maxQuantityLen = 32

// MaxMaxConnections bounds podtls.io/max-connections.
const MaxMaxConnections = 1 << 20

// resourceKeys are the annotations parseResources reads.
var resourceKeys = []string{SidecarCPURequest, SidecarCPULimit, SidecarMemoryRequest, SidecarMemoryLimit, MaxConnections}

// parseResources reads the resource annotations of a into spec, reporting
// problems through bad. Quantities are only trimmed and bounded here; the
// webhook checks their syntax and how they combine.
func parseResources(a map[string]string, spec *Spec, bad func(key, got, want string)) {
	for _, f := range []struct {
		key string
		dst *string
	}{
		{SidecarCPURequest, &spec.Resources.CPURequest},
		{SidecarCPULimit, &spec.Resources.CPULimit},
		{SidecarMemoryRequest, &spec.Resources.MemoryRequest},
		{SidecarMemoryLimit, &spec.Resources.MemoryLimit},
	} {
		v, ok := a[f.key]
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		if v == "" || len(v) > maxQuantityLen || strings.ContainsAny(v, " \t\n") {
			bad(f.key, fmt.Sprintf("got %q", v), `a Kubernetes quantity, e.g. "100m" (CPU) or "128Mi" (memory)`)
			continue
		}
		*f.dst = v
	}
	if v, ok := a[MaxConnections]; ok {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < 1 || n > MaxMaxConnections {
			bad(MaxConnections, fmt.Sprintf("got %q", v), fmt.Sprintf("an integer between 1 and %d", MaxMaxConnections))
			return
		}
		spec.MaxConnections = n
	}
}
