package reconciler

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/go-logr/logr"

	"github.com/podtls/podtls/acme/issuerconfig"
)

// issuerState is what the reconciler needs from the configuration: the
// current issuer and its config, or why there is none.
type issuerState struct {
	// Loaded is false until the first load attempt finished.
	Loaded bool
	Config issuerconfig.Config
	Issuer Issuer
	// Err is the last load error; with Issuer set, the last good config
	// stays in use.
	Err error
	// accountOK is set once EnsureAccount succeeded for Issuer.
	accountOK bool
	// gen counts issuers built (an Issuer need not be comparable).
	gen uint64
}

// configWatcher loads the config file, builds the issuer, and polls the file
// for content changes (kubelet replaces a ConfigMap volume's files through
// a symlink swap, so content hashing is the robust test). It runs on every
// replica, so each one logs a bad file and exports podtls_acme_config_ok,
// and a new leader finds its issuer ready. Building an issuer only reads
// (the DNS credentials); the account is registered by the leader's first
// order.
type configWatcher struct {
	path     string
	parse    func([]byte) (issuerconfig.Config, error)
	build    func(context.Context, issuerconfig.Config) (Issuer, error)
	interval time.Duration
	log      logr.Logger
	// changed is called after the issuer or its error changed.
	changed func()

	mu      sync.Mutex
	state   issuerState
	good    [sha256.Size]byte // hash of the file the issuer was built from
	goodCfg string            // issuerconfig.Hash of its configuration
	lastErr string            // last error logged, to log each error once
}

// NeedLeaderElection is false: see configWatcher.
func (w *configWatcher) NeedLeaderElection() bool { return false }

// current returns the state for one reconcile.
func (w *configWatcher) current() issuerState {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.state
}

// accountReady records that EnsureAccount succeeded for the issuer of generation gen.
func (w *configWatcher) accountReady(gen uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.state.gen == gen {
		w.state.accountOK = true
	}
}

// rebuild makes the next poll build a new issuer from the same file, if the
// issuer of generation gen is still in use: for state the issuer caches
// that the server no longer has (an account it forgot).
func (w *configWatcher) rebuild(gen uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.state.gen == gen {
		w.good, w.goodCfg = [sha256.Size]byte{}, ""
	}
}

// Start loads at once, then polls until ctx ends.
func (w *configWatcher) Start(ctx context.Context) error {
	t := time.NewTicker(w.interval)
	defer t.Stop()
	for {
		w.poll(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// poll loads the file when its content differs from the one in use (or the
// last attempt failed: a transient issuer error is retried every interval).
func (w *configWatcher) poll(ctx context.Context) {
	data, err := os.ReadFile(w.path)
	var sum [sha256.Size]byte
	var cfg issuerconfig.Config
	var iss Issuer
	if err != nil {
		err = fmt.Errorf("read ACME config: %w", err)
	} else if sum = sha256.Sum256(data); w.unchanged(func() bool { return sum == w.good }) {
		return
	} else if cfg, err = w.parse(data); err != nil {
		err = fmt.Errorf("ACME config %s: %w", w.path, err)
	} else if w.unchanged(func() bool { return cfg.Hash() == w.goodCfg }) {
		// Reformatted or commented, same settings: keep the issuer.
		w.mu.Lock()
		w.good = sum
		w.mu.Unlock()
		return
	} else if iss, err = w.build(ctx, cfg); err != nil {
		err = fmt.Errorf("ACME issuer for %s: %w", cfg.DirectoryURL, err)
	}
	if ctx.Err() != nil {
		return
	}
	w.mu.Lock()
	prev := w.state
	if err == nil {
		w.state = issuerState{Loaded: true, Config: cfg, Issuer: iss, gen: prev.gen + 1}
		w.good, w.goodCfg, w.lastErr = sum, cfg.Hash(), ""
	} else {
		w.state.Loaded, w.state.Err = true, err
	}
	logErr := err != nil && err.Error() != w.lastErr
	if err != nil {
		w.lastErr = err.Error()
	}
	w.mu.Unlock()

	switch {
	case err == nil:
		configOK.Set(1)
		w.log.Info("ACME issuer configured", "directory", iss.Directory(), "file", w.path)
	case logErr:
		configOK.Set(0)
		if prev.Issuer != nil {
			w.log.Error(err, "ACME config not applied; the previous configuration stays in use")
		} else {
			w.log.Error(err, "ACME config not applied; no external certificates are issued until it is fixed")
		}
	}
	if err == nil || !prev.Loaded || logErr {
		w.changed()
	}
}

// unchanged reports whether an issuer is in use and same() says the file
// still describes it. A file that was broken and is back to the settings in
// use clears the error.
func (w *configWatcher) unchanged(same func() bool) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.state.Issuer == nil || !same() {
		return false
	}
	if w.state.Err != nil {
		w.state.Err, w.lastErr = nil, ""
		configOK.Set(1)
		w.log.Info("ACME config valid again; the configuration in use is unchanged", "file", w.path)
	}
	return true
}
