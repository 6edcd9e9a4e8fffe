package exposure

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/podtls/podtls/sidecar/metrics"
	"github.com/podtls/podtls/sidecarevents/eventsapi"
)

// DefaultInterval is the time between two checks: apps often bind their
// port well after the sidecar starts, and may rebind while running.
const DefaultInterval = time.Minute

// Config configures a Checker. Zero values take the defaults.
type Config struct {
	PodIPs []netip.Addr
	Ports  []int
	// Interval between checks (DefaultInterval).
	Interval time.Duration
	// Timeout of one dial (1 s): a pod's own IP answers at once.
	Timeout time.Duration
	// Dial is a net.Dialer's DialContext by default.
	Dial Dialer
	// Now and After are the clock (time.Now, time.After); tests fake them.
	Now   func() time.Time
	After func(time.Duration) <-chan time.Time
	// Disabled, when set, is why the check does not run (Report.Reason).
	Disabled string
	// Report, if set, sends an Event about the pod (reason, message) to the
	// controller when a port becomes exposed.
	Report   func(reason, message string)
	Logger   *slog.Logger
	Registry *metrics.Registry
}

// Checker runs Check on a schedule, keeps the last Report, sets the gauge
// podtls_sidecar_plaintext_exposed{port} and logs each change once.
type Checker struct {
	cfg   Config
	gauge *metrics.GaugeVec

	mu   sync.Mutex
	last Report
	// exposed is the state last logged per port.
	exposed map[int]bool
	checks  chan struct{} // closed and replaced after every check (tests wait on it)
}

// New returns a Checker. With no pod IP or no port it never dials, and its
// report says why.
func New(cfg Config) *Checker {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = time.Second
	}
	if cfg.Dial == nil {
		cfg.Dial = (&net.Dialer{}).DialContext
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.After == nil {
		cfg.After = time.After
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Disabled == "" {
		switch {
		case len(cfg.PodIPs) == 0:
			cfg.Disabled = "pod IP unknown (POD_IP not set): the sidecar runs outside Kubernetes"
		case len(cfg.Ports) == 0:
			cfg.Disabled = "no inbound listener forwards to a loopback app port"
		}
	}
	c := &Checker{cfg: cfg, exposed: map[int]bool{}, checks: make(chan struct{})}
	c.last = Report{Enabled: cfg.Disabled == "", Reason: cfg.Disabled}
	for _, ip := range cfg.PodIPs {
		c.last.PodIPs = append(c.last.PodIPs, ip.String())
	}
	if cfg.Registry != nil {
		c.gauge = cfg.Registry.NewGaugeVec("podtls_sidecar_plaintext_exposed",
			"1 when the app port behind an inbound listener also accepts plaintext connections on the pod IP (bypassing mTLS and the allow list), else 0.", "port")
		if cfg.Disabled == "" {
			for _, p := range cfg.Ports {
				c.gauge.With(strconv.Itoa(p)).Set(0)
			}
		}
	}
	return c
}

// Report returns the result of the last check.
func (c *Checker) Report() Report {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
}

// Checked returns a channel closed when the next check finishes.
func (c *Checker) Checked() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.checks
}

// Run checks at once and then every Interval until ctx ends.
func (c *Checker) Run(ctx context.Context) {
	if c.cfg.Disabled != "" {
		c.cfg.Logger.Info("plaintext bypass check off", "reason", c.cfg.Disabled)
		return
	}
	for {
		c.CheckNow(ctx)
		select {
		case <-ctx.Done():
			return
		case <-c.cfg.After(c.cfg.Interval):
		}
	}
}

// CheckNow runs one check and records it.
func (c *Checker) CheckNow(ctx context.Context) Report {
	r := Check(ctx, c.cfg.Dial, c.cfg.PodIPs, c.cfg.Ports, c.cfg.Timeout, c.cfg.Now())
	c.mu.Lock()
	defer c.mu.Unlock()
	if ctx.Err() != nil {
		return c.last // canceled mid-check: the dials failed for that reason only
	}
	for _, p := range r.Ports {
		if c.gauge != nil {
			v := int64(0)
			if p.Exposed {
				v = 1
			}
			c.gauge.With(strconv.Itoa(p.Port)).Set(v)
		}
		if was := c.exposed[p.Port]; was != p.Exposed {
			c.exposed[p.Port] = p.Exposed
			if p.Exposed {
				c.cfg.Logger.Warn("app port reachable in plaintext on the pod IP, bypassing mTLS and the allow list",
					"port", p.Port, "addresses", p.Addresses, "fix", p.Fix)
				if c.cfg.Report != nil {
					c.cfg.Report(eventsapi.ReasonPlaintextExposed, fmt.Sprintf("app port %d is reachable without TLS at %s, bypassing mTLS and the allow list; %s",
						p.Port, strings.Join(p.Addresses, ", "), p.Fix))
				}
			} else {
				c.cfg.Logger.Info("app port no longer reachable on the pod IP", "port", p.Port)
			}
		}
		if p.Error != "" {
			c.cfg.Logger.Debug("plaintext bypass check inconclusive", "port", p.Port, "error", p.Error)
		}
	}
	c.last = r
	close(c.checks)
	c.checks = make(chan struct{})
	return r
}
