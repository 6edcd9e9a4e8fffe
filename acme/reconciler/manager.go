// Package reconciler is the ACME manager of podtls-controller: a leader-elected
// reconciler that keeps one kubernetes.io/tls Secret per namespace and
// external host set filled with a publicly trusted certificate, obtained by
// an Issuer (acme, lego with DNS-01), in the format of acme/status.
//
// Which pods count. A pod makes the manager act on Secret NAME in its
// namespace only if it was injected (podtls.io/status), its
// podtls.io/external-secret annotation is NAME, and NAME equals
// contract.ExternalSecretName of its podtls.io/external-hosts, parsed with the
// webhook's own parser. Pods that fail the last checks get a Warning Event
// and are ignored: pod annotations are editable, and a pod must never point
// the manager at a Secret of another host set. Finished and terminating pods
// do not count as users.
//
// Which Secrets it writes. Only Secrets labelled
// app.kubernetes.io/managed-by=podtls-controller and
// podtls.io/component=external-cert (the manager's cache sees no others). If
// a Secret of the name exists without those labels, the pods get a Warning
// Event and the Secret is left alone.
//
// One reconcile key per namespace/Secret name; pods are found through a field
// index on their external-secret annotation. Triggers: pod changes, managed
// Secret changes, a periodic resync, a configuration change, and the
// RequeueAfter of the next planned renewal, backoff end or ARI recheck.
//
// When it orders. A Secret is created at the first attempt (empty tls.crt
// and tls.key, status hosts and directory). A certificate is ordered when
// there is none, its names differ from the hosts, it came from another ACME
// directory (staging -> production), it expired, podtls.io/force-renew is
// set, or its renewal time (ARI, else 2/3 of the lifetime) has come. Never
// before next-attempt; never more than MaxOrdersPerNamePerHour orders for any
// name in a sliding hour (kept in the leader's memory and seeded from each
// Secret's last-attempt after a failover); one order at a time per host set
// across all namespaces.
//
// Crash safety. Before each order the manager persists last-attempt and a
// next-attempt as if the order were going to fail. A leader that dies
// mid-order therefore leaves a backoff behind, and its successor does not
// reorder at once. A certificate that was issued but could not be written
// (conflict, cancelled context) is kept in memory and written by the next
// reconcile instead of ordering again; writes after issuance use a context
// detached from the reconcile's. On shutdown or lost leadership the
// reconcile returns at once (the lease is released promptly) even if the
// issuer is still waiting for DNS propagation; a certificate that order
// still yields is written in the background. ARI's "replaces" is only sent on a first
// attempt: a retry might name a certificate that a lost order already replaced.
//
// Failures keep the existing certificate data untouched, count
// failures, record a short last-error and a next-attempt after a jittered
// exponential backoff (MinBackoff doubling to MaxBackoff, up to 20% earlier
// at random), and raise ExternalCertFailed Events.
//
// Same hosts in two namespaces. The Secret name depends on the hosts only,
// so both namespaces have a Secret of the same name. When one namespace
// needs a certificate and the other's Secret holds a valid one from the same
// directory that is not yet due for renewal, and the policy allows both
// namespaces every host, the manager copies it (certificate and key) instead
// of ordering: Let's Encrypt allows only 5 duplicate certificates per week,
// and either namespace could obtain a certificate for the names anyway. A
// forced renewal always orders.
//
// Garbage collection. A managed Secret no pod uses gets unused-since, and is
// deleted SecretGracePeriod later (precondition on its resourceVersion);
// a user coming back clears unused-since.
//
// Configuration. With an empty config file path ACME is off: a pods-only
// controller gives every injected pod with external hosts one
// ExternalCertNoIssuer Event, and no Secret is watched (no Secret RBAC
// needed). Otherwise every replica loads the file at start and whenever its
// content hash changes (polled; kubelet swaps ConfigMap volumes) and builds
// the issuer; the leader then requeues every Secret. Only the leader's
// orders register the account. A bad file is logged once, shown in
// podtls_acme_config_ok and in Events on pods; the last good configuration
// stays in use. An order failing with accountDoesNotExist (the server forgot
// the account) makes the watcher rebuild the issuer, which looks the account
// up by key or registers it again.
//
// Events that are not tied to an attempt (denied, no issuer, ignored pod,
// foreign Secret) are recorded once per pod and message. Pods whose
// annotations do not match their Secret, or whose Secret is foreign, get
// ExternalCertIgnored rather than ExternalCertFailed: nothing was attempted.
//
// Every pod learns which certificate it serves: the pods using a Secret when
// a certificate is stored get ExternalCertIssued/Renewed, and a pod that
// starts using a Secret already holding a valid certificate (a new replica)
// gets one ExternalCertIssued "uses certificate serial ..." Event at its first
// reconcile. The manager remembers per Secret which serial each pod was told
// about, in memory: resyncs repeat nothing, and nothing is written to the
// Secret. After a restart the memory is empty; pods created before the
// Secret's last-success are taken to have been told by the previous leader,
// and of the newer ones at most 50 per Secret (the newest) are told again.
package reconciler

import (
	"context"
	"crypto/x509"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"

	"github.com/podtls/podtls/acme"
	"github.com/podtls/podtls/acme/issuerconfig"
	"github.com/podtls/podtls/acme/status"
)

// Issuer obtains certificates from one ACME server (implemented by acme).
type Issuer interface {
	// Directory is the ACME directory URL.
	Directory() string
	// EnsureAccount registers the account if needed (idempotent).
	EnsureAccount(ctx context.Context) (status.Account, error)
	// Obtain orders a certificate for hosts with a new key; replaces is the
	// certificate it replaces (ARI), or nil.
	Obtain(ctx context.Context, hosts []string, replaces *x509.Certificate) (*acme.Certificate, error)
	// RenewalTime says when leaf should be renewed.
	RenewalTime(ctx context.Context, leaf *x509.Certificate) (acme.Renewal, error)
}

// Options configure the manager. Only ConfigFile, ParseConfig and NewIssuer
// matter in production; the rest exist for tests.
type Options struct {
	// ConfigFile is the issuer configuration (--acme-config); empty: ACME off.
	ConfigFile string
	// ParseConfig parses and validates the file's content, applying defaults.
	ParseConfig func([]byte) (issuerconfig.Config, error)
	// NewIssuer builds the issuer of a configuration.
	NewIssuer func(context.Context, issuerconfig.Config) (Issuer, error)

	// Now is the clock (default time.Now).
	Now func() time.Time
	// Rand returns a number in [0,1) for backoff jitter (default math/rand/v2).
	Rand func() float64
	// ConfigPollInterval between checks of the config file (default 10s).
	ConfigPollInterval time.Duration
	// ResyncInterval between full resyncs (default 10m).
	ResyncInterval time.Duration
	// OrderTimeout bounds one order (default 10m).
	OrderTimeout time.Duration
	// MaxConcurrentReconciles (default 4): orders of different host sets run
	// in parallel; DNS propagation waits dominate them.
	MaxConcurrentReconciles int
	// Recorder records Events (default: the manager's, as podtls-controller).
	Recorder record.EventRecorder
	// Logger (default: the manager's).
	Logger logr.Logger

	// Test seams, nil in production, so a test can wait for the manager to
	// have processed a trigger instead of sleeping. resyncing is called when
	// a resync pass starts, before it queues any key. reconciling is called
	// when a reconcile of key starts; the func it returns, when it returns.
	resyncing   func()
	reconciling func(key types.NamespacedName) (done func())
}

// Manager is the reconciler. Create it with New and register it with
// SetupWithManager.
type Manager struct {
	opts     Options
	client   client.Client
	api      client.Reader
	recorder record.EventRecorder
	log      logr.Logger
	config   *configWatcher

	limiter  orderLimiter
	inflight inFlight
	failing  failingSet
	requeue  chan event.TypedGenericEvent[types.NamespacedName]
	kick     chan struct{}

	mu       sync.Mutex
	pending  map[types.NamespacedName]pendingCert
	recheck  map[types.NamespacedName]time.Time
	notified map[types.UID]string
	// told: per Secret, the serial each user pod was told about (an
	// issued/renewed Event or a "uses certificate" notice). A Secret without
	// an entry has not been looked at since this process started.
	told map[types.NamespacedName]map[types.UID]string
}

// pendingCert is an issued certificate not yet written to its Secret.
type pendingCert struct {
	hosts     []string
	cert      *acme.Certificate
	renewal   acme.Renewal
	directory string
	renewed   bool
}

// New returns a manager with defaults filled in.
func New(opts Options) *Manager {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Rand == nil {
		opts.Rand = defaultRand
	}
	if opts.ConfigPollInterval <= 0 {
		opts.ConfigPollInterval = 10 * time.Second
	}
	if opts.ResyncInterval <= 0 {
		opts.ResyncInterval = 10 * time.Minute
	}
	if opts.OrderTimeout <= 0 {
		opts.OrderTimeout = 10 * time.Minute
	}
	if opts.MaxConcurrentReconciles <= 0 {
		opts.MaxConcurrentReconciles = 4
	}
	return &Manager{
		opts:     opts,
		requeue:  make(chan event.TypedGenericEvent[types.NamespacedName], 1024),
		kick:     make(chan struct{}, 1),
		pending:  map[types.NamespacedName]pendingCert{},
		recheck:  map[types.NamespacedName]time.Time{},
		notified: map[types.UID]string{},
		told:     map[types.NamespacedName]map[types.UID]string{},
	}
}

// CurrentConfig is the issuer configuration in use: the last file that
// loaded and built an issuer. False before one did, and without a config
// file. The DNS-records publisher reads its settings from it.
func (m *Manager) CurrentConfig() (issuerconfig.Config, bool) {
	if m.config == nil {
		return issuerconfig.Config{}, false
	}
	st := m.config.current()
	if !st.Loaded || st.Issuer == nil {
		return issuerconfig.Config{}, false
	}
	return st.Config, true
}
