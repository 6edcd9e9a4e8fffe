// Package status is the contract between the ACME manager, which writes the
// state of every external certificate into its Secret, and the readers of
// that state (the podtls CLI, dashboards, users with kubectl). It depends on
// the standard library only, so readers do not link lego.
//
// An external certificate lives in a Secret of type kubernetes.io/tls named
// by contract.ExternalSecretName(hosts) in the pod's namespace. The
// manager creates it at the first attempt with empty tls.crt and tls.key, so
// the status is visible before the first issuance; the sidecar treats empty
// files as "not issued yet". tls.crt holds the full chain once issued.
package status

import (
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/podtls/podtls/contract"
)

// Values of contract.ComponentLabel on the Secrets the ACME manager owns
// (beside contract.ManagedByLabel=contract.ManagedByValue). The manager never
// writes a Secret without ComponentLabel=ComponentExternalCert: a pod cannot
// point it at someone else's Secret.
const (
	ComponentExternalCert = "external-cert"
	ComponentACMEAccount  = "acme-account"
)

// Annotation keys on an external-certificate Secret. Times are RFC 3339 UTC.
const (
	Hosts         = contract.Prefix + "hosts"          // sorted host set, comma-separated
	Directory     = contract.Prefix + "acme-directory" // directory URL of the issuing ACME server
	CertIssuer    = contract.Prefix + "cert-issuer"    // issuer DN of the current leaf
	Serial        = contract.Prefix + "serial"         // hex serial of the current leaf
	NotBefore     = contract.Prefix + "not-before"
	NotAfter      = contract.Prefix + "not-after"
	RenewAt       = contract.Prefix + "renew-at"       // when the next renewal is planned
	RenewalSource = contract.Prefix + "renewal-source" // RenewalARI or RenewalLifetime
	LastAttempt   = contract.Prefix + "last-attempt"
	LastSuccess   = contract.Prefix + "last-success"
	LastError     = contract.Prefix + "last-error" // empty after a success; never holds secrets
	Failures      = contract.Prefix + "failures"   // consecutive failed attempts
	NextAttempt   = contract.Prefix + "next-attempt"
	UnusedSince   = contract.Prefix + "unused-since" // set when no pod uses the Secret; deleted after a grace period
	// ForceRenew is set by users (any non-empty value, e.g. a timestamp):
	// the manager renews at once, within the per-name order cap, and removes
	// the annotation after the renewal succeeded.
	ForceRenew = contract.Prefix + "force-renew"
)

// Values of RenewalSource.
const (
	RenewalARI      = "ari"      // the server's ACME Renewal Information (RFC 9773)
	RenewalLifetime = "lifetime" // 2/3 of the certificate's lifetime
)

// Annotation keys on the ACME account Secret (Opaque, in the controller's
// namespace, data key AccountKeyFile). The key is reused across restarts;
// registration is idempotent.
const (
	AccountKeyFile = "account.key"
	AccountURI     = contract.Prefix + "account-uri"
	AccountContact = contract.Prefix + "account-contact"
	AccountRegAt   = contract.Prefix + "registered-at"
	AccountDirURL  = Directory
	AccountLastErr = LastError
)

// Event reasons the ACME manager records on pods that use a host set.
const (
	EventIssued        = "ExternalCertIssued" // also: a pod started using an already issued Secret
	EventRenewed       = "ExternalCertRenewed"
	EventFailed        = "ExternalCertFailed"
	EventDenied        = "ExternalCertDenied"   // host not allowed for the namespace by the issuer's policy
	EventNotConfigured = "ExternalCertNoIssuer" // pod asks for external hosts but no ACME issuer is configured
	// EventIgnored: the pod's external-hosts and external-secret annotations
	// do not match (edited after admission, or a name collision), or a
	// Secret of that name exists but is not the manager's; nothing is ordered.
	EventIgnored = "ExternalCertIgnored"
)

// External is the parsed state of one external-certificate Secret.
type External struct {
	Hosts         []string  `json:"hosts"`
	Directory     string    `json:"acmeDirectory,omitempty"`
	CertIssuer    string    `json:"certIssuer,omitempty"`
	Serial        string    `json:"serial,omitempty"`
	NotBefore     time.Time `json:"notBefore,omitzero"`
	NotAfter      time.Time `json:"notAfter,omitzero"`
	RenewAt       time.Time `json:"renewAt,omitzero"`
	RenewalSource string    `json:"renewalSource,omitempty"`
	LastAttempt   time.Time `json:"lastAttempt,omitzero"`
	LastSuccess   time.Time `json:"lastSuccess,omitzero"`
	LastError     string    `json:"lastError,omitempty"`
	Failures      int       `json:"failures,omitempty"`
	NextAttempt   time.Time `json:"nextAttempt,omitzero"`
	UnusedSince   time.Time `json:"unusedSince,omitzero"`
	ForceRenew    string    `json:"forceRenew,omitempty"`
}

// Issued reports whether a certificate has been stored.
func (e External) Issued() bool { return e.Serial != "" && !e.NotAfter.IsZero() }

// Failing reports whether the last attempt failed.
func (e External) Failing() bool { return e.LastError != "" || e.Failures > 0 }

// Encode writes e into annotations (the map is created if nil and returned).
// Zero fields remove their key, so a success clears LastError and Failures.
func (e External) Encode(a map[string]string) map[string]string {
	if a == nil {
		a = map[string]string{}
	}
	set := func(k, v string) {
		if v == "" {
			delete(a, k)
		} else {
			a[k] = v
		}
	}
	setTime := func(k string, t time.Time) {
		if t.IsZero() {
			delete(a, k)
		} else {
			a[k] = t.UTC().Format(time.RFC3339)
		}
	}
	set(Hosts, strings.Join(e.Hosts, ","))
	set(Directory, e.Directory)
	set(CertIssuer, e.CertIssuer)
	set(Serial, e.Serial)
	setTime(NotBefore, e.NotBefore)
	setTime(NotAfter, e.NotAfter)
	setTime(RenewAt, e.RenewAt)
	set(RenewalSource, e.RenewalSource)
	setTime(LastAttempt, e.LastAttempt)
	setTime(LastSuccess, e.LastSuccess)
	set(LastError, truncate(e.LastError, 1024))
	if e.Failures > 0 {
		a[Failures] = strconv.Itoa(e.Failures)
	} else {
		delete(a, Failures)
	}
	setTime(NextAttempt, e.NextAttempt)
	setTime(UnusedSince, e.UnusedSince)
	set(ForceRenew, e.ForceRenew)
	return a
}

// Decode reads the state from a Secret's annotations. Malformed values (the
// annotations are editable by anyone with Secret access) are reported, and the
// other fields are still filled in.
func Decode(a map[string]string) (External, error) {
	var e External
	var errs []string
	getTime := func(k string) time.Time {
		v := a[k]
		if v == "" {
			return time.Time{}
		}
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s=%q: not an RFC 3339 time", k, v))
			return time.Time{}
		}
		return t
	}
	if h := a[Hosts]; h != "" {
		e.Hosts = strings.Split(h, ",")
	}
	e.Directory = a[Directory]
	e.CertIssuer = a[CertIssuer]
	e.Serial = a[Serial]
	e.NotBefore = getTime(NotBefore)
	e.NotAfter = getTime(NotAfter)
	e.RenewAt = getTime(RenewAt)
	e.RenewalSource = a[RenewalSource]
	e.LastAttempt = getTime(LastAttempt)
	e.LastSuccess = getTime(LastSuccess)
	e.LastError = a[LastError]
	if v := a[Failures]; v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			errs = append(errs, fmt.Sprintf("%s=%q: not a count", Failures, v))
		} else {
			e.Failures = n
		}
	}
	e.NextAttempt = getTime(NextAttempt)
	e.UnusedSince = getTime(UnusedSince)
	e.ForceRenew = a[ForceRenew]
	if len(errs) > 0 {
		return e, fmt.Errorf("external certificate status: %s", strings.Join(errs, "; "))
	}
	return e, nil
}

// Account is the parsed state of the ACME account Secret.
type Account struct {
	Directory    string    `json:"acmeDirectory,omitempty"`
	URI          string    `json:"uri,omitempty"`
	Contact      string    `json:"contact,omitempty"`
	RegisteredAt time.Time `json:"registeredAt,omitzero"`
	LastError    string    `json:"lastError,omitempty"`
}

// Registered reports whether the account is registered at directory.
func (a Account) Registered(directory string) bool {
	return a.URI != "" && a.Directory == directory
}

// Encode writes the account state into annotations.
func (a Account) Encode(m map[string]string) map[string]string {
	if m == nil {
		m = map[string]string{}
	}
	for k, v := range map[string]string{AccountDirURL: a.Directory, AccountURI: a.URI,
		AccountContact: a.Contact, AccountLastErr: truncate(a.LastError, 1024)} {
		if v == "" {
			delete(m, k)
		} else {
			m[k] = v
		}
	}
	if a.RegisteredAt.IsZero() {
		delete(m, AccountRegAt)
	} else {
		m[AccountRegAt] = a.RegisteredAt.UTC().Format(time.RFC3339)
	}
	return m
}

// DecodeAccount reads the account state from annotations.
func DecodeAccount(m map[string]string) (Account, error) {
	a := Account{Directory: m[AccountDirURL], URI: m[AccountURI], Contact: m[AccountContact], LastError: m[AccountLastErr]}
	if v := m[AccountRegAt]; v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			return a, fmt.Errorf("account status: %s=%q: not an RFC 3339 time", AccountRegAt, v)
		}
		a.RegisteredAt = t
	}
	return a, nil
}

// truncate keeps annotations small; it cuts on a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - 3
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}
