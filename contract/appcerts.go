package contract

import (
	"errors"
	"fmt"
	"path"
	"regexp"
	"slices"
	"strings"
)

// Sources and formats of app-owned certificate files (AppCertSources,
// AppCertFormats).
const (
	AppSourceMesh     = "mesh"
	AppSourceExternal = "external"

	FormatPEM    = "pem"
	FormatPKCS12 = "pkcs12"
	FormatJKS    = "jks"

	PKCS12Modern = "modern"
	PKCS12Legacy = "legacy"
)

// Reload actions (AppCertReload).
const (
	ReloadNone    = "none"
	ReloadSignal  = "signal"
	ReloadHTTP    = "http"
	ReloadRestart = "restart"
)

// DefaultPasswordKey is the Secret key of AppCertPassword without "/KEY".
const DefaultPasswordKey = "password"

// AppCertSpec is the typed form of the app-cert annotations: which
// certificates are written where, in which formats, and how the app learns
// that they changed.
type AppCertSpec struct {
	Path    string   `json:"path"`
	Sources []string `json:"sources"`
	Formats []string `json:"formats"`
	// PasswordSecret and PasswordKey name the stores' password; empty: the
	// sidecar generates one.
	PasswordSecret string `json:"passwordSecret,omitempty"`
	PasswordKey    string `json:"passwordKey,omitempty"`
	PKCS12         string `json:"pkcs12,omitempty"` // PKCS12Legacy, or "" (modern)
	Reload         Reload `json:"reload"`
}

// Has reports whether the spec delivers format f.
func (a *AppCertSpec) Has(format string) bool { return slices.Contains(a.Formats, format) }

// Stores reports whether a password is needed (PKCS#12 or JKS).
func (a *AppCertSpec) Stores() bool { return a.Has(FormatPKCS12) || a.Has(FormatJKS) }

// Reload is a parsed AppCertReload value.
type Reload struct {
	Action string `json:"action"`
	// Signal is the signal's name ("SIGHUP") and Process the command name
	// the signal is limited to (empty: every app container's main process).
	Signal  string `json:"signal,omitempty"`
	Process string `json:"process,omitempty"`
	// Port and Path are the local endpoint of ReloadHTTP.
	Port int32  `json:"port,omitempty"`
	Path string `json:"path,omitempty"`
}

// String renders r in the annotation's (and --app-cert-reload's) form.
func (r Reload) String() string {
	switch r.Action {
	case ReloadSignal:
		s := ReloadSignal + ":" + r.Signal
		if r.Process != "" {
			s += ":" + r.Process
		}
		return s
	case ReloadHTTP:
		return fmt.Sprintf("%s:%d%s", ReloadHTTP, r.Port, r.Path)
	case "":
		return ReloadNone
	}
	return r.Action
}

// ReloadSignals are the signals "signal" may send, by name.
var ReloadSignals = []string{"SIGHUP", "SIGUSR1", "SIGUSR2", "SIGINT", "SIGQUIT", "SIGTERM", "SIGWINCH"}

// ReloadForm is the accepted form of AppCertReload, for error messages.
const ReloadForm = `"none", "signal[:SIGNAL[:PROCESS]]" (default SIGHUP), "http:PORT[/PATH]" or "restart"`

var (
	processName = regexp.MustCompile(`^[A-Za-z0-9._+-]{1,15}$`)
	secretKey   = regexp.MustCompile(`^[-._A-Za-z0-9]{1,253}$`)
	urlPath     = regexp.MustCompile(`^/[-._~A-Za-z0-9/!$&'()*+,;=:@%]*$`)
)

// ParseReload reads an AppCertReload value; the sidecar's --app-cert-reload
// uses it too.
func ParseReload(v string) (Reload, error) {
	v = strings.TrimSpace(v)
	action, rest, hasRest := strings.Cut(v, ":")
	switch action {
	case ReloadNone, ReloadRestart:
		if hasRest {
			return Reload{}, fmt.Errorf("%q takes no argument", action)
		}
		return Reload{Action: action}, nil
	case ReloadSignal:
		sig, proc, _ := strings.Cut(rest, ":")
		sig = strings.ToUpper(sig)
		if sig == "" {
			sig = "SIGHUP"
		} else if !strings.HasPrefix(sig, "SIG") {
			sig = "SIG" + sig
		}
		if !slices.Contains(ReloadSignals, sig) {
			return Reload{}, fmt.Errorf("signal %q is not one of %s", sig, strings.Join(ReloadSignals, ", "))
		}
		if hasRest && strings.Contains(rest, ":") && !processName.MatchString(proc) {
			return Reload{}, fmt.Errorf("process %q: want a command name of 1-15 letters, digits and ._+- (as in /proc/PID/comm)", proc)
		}
		return Reload{Action: ReloadSignal, Signal: sig, Process: proc}, nil
	case ReloadHTTP:
		portStr, p, hasPath := strings.Cut(rest, "/")
		port, err := parsePort(portStr)
		if err != nil || !hasRest {
			return Reload{}, fmt.Errorf("%q: want http:PORT[/PATH] with a port 1-65535", v)
		}
		if port == AdminPort {
			return Reload{}, fmt.Errorf("port %d is the sidecar's admin port", port)
		}
		p = "/" + p
		if !hasPath {
			p = "/"
		}
		if len(p) > 1024 || !urlPath.MatchString(p) {
			return Reload{}, fmt.Errorf("path %q: want an absolute URL path without query or spaces", p)
		}
		return Reload{Action: ReloadHTTP, Port: port, Path: p}, nil
	}
	return Reload{}, fmt.Errorf("action %q is unknown", action)
}

// systemDirs may not be replaced by the certificates' mount.
var systemDirs = []string{"/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64",
	"/proc", "/root", "/run", "/sbin", "/sys", "/tmp", "/usr", "/var", "/var/run"}

// ValidateAppCertPath checks an AppCerts path: absolute, clean, not a system
// directory and not podtls's own.
func ValidateAppCertPath(p string) error {
	switch {
	case p == "" || !path.IsAbs(p):
		return errors.New("not an absolute path")
	case path.Clean(p) != p:
		return fmt.Errorf("not clean (want %q)", path.Clean(p))
	case len(p) > 256:
		return errors.New("longer than 256 bytes")
	case strings.ContainsAny(p, ":,\\\x00\n") || strings.ContainsFunc(p, func(r rune) bool { return r < ' ' || r == 0x7f }):
		return errors.New(`contains ':', ',', '\' or a control character`)
	case slices.Contains(systemDirs, p):
		return errors.New("would hide a system directory of the image; use a directory of its own such as /etc/tls")
	case p == "/var/run/podtls" || strings.HasPrefix(p, "/var/run/podtls/") || strings.HasPrefix(p, "/var/run/secrets/"):
		return errors.New("is reserved for podtls and Kubernetes")
	}
	return nil
}

// parseAppCerts reads the app-cert annotations into spec; spec.ExternalHosts
// must be filled already.
func parseAppCerts(a map[string]string, spec *Spec, bad func(key, got, want string)) []string {
	p, on := a[AppCerts]
	if !on {
		for _, k := range appCertKeys[1:] {
			if _, set := a[k]; set {
				bad(k, "set without "+AppCerts, "the annotation "+AppCerts+` naming where the files go, e.g. "/etc/tls"`)
			}
		}
		return nil
	}
	ac := &AppCertSpec{Path: strings.TrimSpace(p), Formats: []string{FormatPEM}}
	if err := ValidateAppCertPath(ac.Path); err != nil {
		bad(AppCerts, fmt.Sprintf("%q %v", ac.Path, err), `an absolute directory of its own in the app containers, e.g. "/etc/tls"`)
	}

	const sourcesForm = `comma-separated "mesh" and "external", e.g. "mesh,external"`
	if v, ok := a[AppCertSources]; ok {
		for _, s := range SplitList(v) {
			switch {
			case s != AppSourceMesh && s != AppSourceExternal:
				bad(AppCertSources, fmt.Sprintf("source %q is unknown", s), sourcesForm)
			case slices.Contains(ac.Sources, s):
				bad(AppCertSources, fmt.Sprintf("source %q is listed twice", s), sourcesForm)
			case s == AppSourceExternal && len(spec.ExternalHosts) == 0:
				bad(AppCertSources, `"external" without external hosts`, "the annotation "+ExternalHosts+" beside it, or only \"mesh\"")
			default:
				ac.Sources = append(ac.Sources, s)
			}
		}
		if len(ac.Sources) == 0 && len(SplitList(v)) == 0 {
			bad(AppCertSources, "empty", sourcesForm)
		}
	} else {
		ac.Sources = []string{AppSourceMesh}
		if len(spec.ExternalHosts) > 0 {
			ac.Sources = append(ac.Sources, AppSourceExternal)
		}
	}

	const formatsForm = `comma-separated "pem", "pkcs12" and "jks", e.g. "pem,jks"`
	if v, ok := a[AppCertFormats]; ok {
		ac.Formats = nil
		for _, f := range SplitList(v) {
			switch {
			case f != FormatPEM && f != FormatPKCS12 && f != FormatJKS:
				bad(AppCertFormats, fmt.Sprintf("format %q is unknown", f), formatsForm)
			case slices.Contains(ac.Formats, f):
				bad(AppCertFormats, fmt.Sprintf("format %q is listed twice", f), formatsForm)
			default:
				ac.Formats = append(ac.Formats, f)
			}
		}
		if len(SplitList(v)) == 0 {
			bad(AppCertFormats, "empty", formatsForm)
		}
	}

	var warns []string
	if v, ok := a[AppCertPassword]; ok {
		name, key := PasswordRef(v)
		switch {
		case !isDNSSubdomain(name):
			bad(AppCertPassword, fmt.Sprintf("%q is not a Secret name", name), `"NAME" or "NAME/KEY" of a Secret in the pod's namespace`)
		case !secretKey.MatchString(key):
			bad(AppCertPassword, fmt.Sprintf("%q is not a Secret key", key), `"NAME" or "NAME/KEY" of a Secret in the pod's namespace`)
		default:
			ac.PasswordSecret, ac.PasswordKey = name, key
			if !ac.Stores() {
				warns = append(warns, fmt.Sprintf("annotation %s: no store format (pkcs12, jks) in %s uses the password", AppCertPassword, AppCertFormats))
			}
		}
	}

	if v, ok := a[AppCertPKCS12]; ok {
		switch v = strings.TrimSpace(v); v {
		case PKCS12Modern:
		case PKCS12Legacy:
			ac.PKCS12 = PKCS12Legacy
		default:
			bad(AppCertPKCS12, fmt.Sprintf("got %q", v), `"modern" (the default) or "legacy"`)
		}
		if !ac.Has(FormatPKCS12) {
			warns = append(warns, fmt.Sprintf("annotation %s: %s does not list pkcs12", AppCertPKCS12, AppCertFormats))
		}
	}

	if v, ok := a[AppCertReload]; ok {
		r, err := ParseReload(v)
		switch {
		case err != nil:
			bad(AppCertReload, err.Error(), ReloadForm)
		case r.Action == ReloadRestart && slices.Contains(ac.Sources, AppSourceMesh):
			bad(AppCertReload, `"restart" with the mesh source: mesh certificates renew every few hours, and each renewal would roll the workload`,
				`"signal", "http" or "none" for mesh certificates, or `+AppCertSources+`: "external" with "restart"`)
		default:
			ac.Reload = r
		}
	} else {
		ac.Reload = Reload{Action: ReloadNone}
	}
	spec.AppCerts = ac
	return warns
}

// PasswordRef splits an AppCertPassword value into the Secret's name and
// key (DefaultPasswordKey when the value names none). It does not validate.
func PasswordRef(v string) (name, key string) {
	name, key, hasKey := strings.Cut(strings.TrimSpace(v), "/")
	if !hasKey {
		key = DefaultPasswordKey
	}
	return name, key
}

// isDNSSubdomain reports whether s is a valid object name (RFC 1123 subdomain).
func isDNSSubdomain(s string) bool {
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if len(label) == 0 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '-' {
				return false
			}
		}
	}
	return true
}

// appCertKeys are the app-cert annotations, AppCerts first.
var appCertKeys = []string{AppCerts, AppCertSources, AppCertFormats, AppCertPassword, AppCertPKCS12, AppCertReload}
