package contract

import (
	"encoding/json"
	"fmt"
	"strings"
)

// EnvAppProbes is the sidecar's environment variable listing the app probes it runs
// for the kubelet: the JSON of an AppProbes value.
const EnvAppProbes = "PODTLS_APP_PROBES"

// AppHealthPrefix starts the admin-port path of every rewritten probe.
const AppHealthPrefix = "/app-health/"

// Probe kinds, the last element of an app-health path.
const (
	ProbeLiveness  = "livez"
	ProbeReadiness = "readyz"
	ProbeStartup   = "startupz"
)

// AppHealthPath is the admin-port path the kubelet calls for the probe of kind of
// container: /app-health/CONTAINER/KIND.
func AppHealthPath(container, kind string) string {
	return AppHealthPrefix + container + "/" + kind
}

// AppProbesConfig maps app-health paths to the probe the sidecar runs for each.
type AppProbesConfig map[string]AppProbe

// AppProbe is one probe as the sidecar runs it against the app on loopback: exactly
// one of HTTPGet, TCPSocket and GRPC is set, with the port already resolved (named
// ports and the sidecar's own inbound ports translated by the webhook).
type AppProbe struct {
	HTTPGet   *HTTPGetProbe `json:"httpGet,omitempty"`
	TCPSocket *PortProbe    `json:"tcpSocket,omitempty"`
	GRPC      *GRPCProbe    `json:"grpc,omitempty"`
	// TimeoutSeconds is the probe's own timeout (the kubelet's default is 1).
	TimeoutSeconds int32 `json:"timeoutSeconds,omitempty"`
}

// HTTPGetProbe is an HTTP GET against 127.0.0.1:Port.
type HTTPGetProbe struct {
	Port int32  `json:"port"`
	Path string `json:"path,omitempty"`
	// Scheme is "HTTP" or "HTTPS" (certificate not verified, as the kubelet does).
	Scheme  string       `json:"scheme,omitempty"`
	Headers []HTTPHeader `json:"headers,omitempty"`
}

// HTTPHeader is one request header of an HTTP probe.
type HTTPHeader struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// PortProbe is a TCP connect to 127.0.0.1:Port.
type PortProbe struct {
	Port int32 `json:"port"`
}

// GRPCProbe is a grpc.health.v1 Check of Service against 127.0.0.1:Port.
type GRPCProbe struct {
	Port    int32  `json:"port"`
	Service string `json:"service,omitempty"`
}

// ParseAppProbes reads and checks the JSON of EnvAppProbes.
func ParseAppProbes(data string) (AppProbesConfig, error) {
	if strings.TrimSpace(data) == "" {
		return nil, nil
	}
	if len(data) > MaxAnnotationLen*4 {
		return nil, fmt.Errorf("%s: %d bytes, want at most %d", EnvAppProbes, len(data), MaxAnnotationLen*4)
	}
	var cfg AppProbesConfig
	if err := json.Unmarshal([]byte(data), &cfg); err != nil {
		return nil, fmt.Errorf("%s: %w", EnvAppProbes, err)
	}
	for path, p := range cfg {
		if err := p.validate(path); err != nil {
			return nil, fmt.Errorf("%s: %w", EnvAppProbes, err)
		}
	}
	return cfg, nil
}

func (p AppProbe) validate(path string) error {
	rest, ok := strings.CutPrefix(path, AppHealthPrefix)
	container, kind, ok2 := strings.Cut(rest, "/")
	if !ok || !ok2 || container == "" || (kind != ProbeLiveness && kind != ProbeReadiness && kind != ProbeStartup) {
		return fmt.Errorf("path %q: want %sCONTAINER/{%s,%s,%s}", path, AppHealthPrefix, ProbeLiveness, ProbeReadiness, ProbeStartup)
	}
	set := 0
	var port int32
	if p.HTTPGet != nil {
		set++
		port = p.HTTPGet.Port
		if s := p.HTTPGet.Scheme; s != "" && s != "HTTP" && s != "HTTPS" {
			return fmt.Errorf("%s: scheme %q, want HTTP or HTTPS", path, s)
		}
		if p.HTTPGet.Path != "" && !strings.HasPrefix(p.HTTPGet.Path, "/") {
			return fmt.Errorf("%s: path %q does not start with /", path, p.HTTPGet.Path)
		}
		for _, h := range p.HTTPGet.Headers {
			if !validHeader(h) {
				return fmt.Errorf("%s: header %q is not a valid HTTP header", path, h.Name)
			}
		}
	}
	if p.TCPSocket != nil {
		set++
		port = p.TCPSocket.Port
	}
	if p.GRPC != nil {
		set++
		port = p.GRPC.Port
	}
	if set != 1 {
		return fmt.Errorf("%s: %d probe handlers, want exactly one of httpGet, tcpSocket, grpc", path, set)
	}
	if port < 1 || port > 65535 {
		return fmt.Errorf("%s: port %d, want 1-65535", path, port)
	}
	if p.TimeoutSeconds < 0 {
		return fmt.Errorf("%s: timeoutSeconds %d is negative", path, p.TimeoutSeconds)
	}
	return nil
}

// validHeader: a token name and a value without control characters, so the sidecar
// never builds a request the kubelet would not.
func validHeader(h HTTPHeader) bool {
	if h.Name == "" {
		return false
	}
	for _, r := range h.Name {
		if r <= ' ' || r >= 0x7f || strings.ContainsRune("()<>@,;:\\\"/[]?={}", r) {
			return false
		}
	}
	for _, r := range h.Value {
		if (r < ' ' && r != '\t') || r == 0x7f {
			return false
		}
	}
	return true
}
