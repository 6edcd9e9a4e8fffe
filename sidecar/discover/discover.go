// Package discover is the sidecar's client of the controller's endpoint
// discovery (package discoveryapi): it long-polls the endpoints of each
// balanced upstream over mutual TLS with the pod's mesh certificate and
// hands the addresses to the proxy's balancers.
package discover

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/podtls/podtls/discovery/discoveryapi"
	"github.com/podtls/podtls/sidecar/metrics"
)

// Defaults of Client.
const (
	DefaultWait       = 30 * time.Second
	DefaultMinBackoff = time.Second
	DefaultMaxBackoff = 30 * time.Second
	// DefaultNotFoundRetry is how often an upstream that is not a Service
	// (yet) is asked again.
	DefaultNotFoundRetry = time.Minute
)

// Client watches endpoints. Its zero durations take the defaults.
type Client struct {
	// BaseURL of the controller's CA server, e.g.
	// https://podtls-controller.podtls-system.svc:8443.
	BaseURL string
	// HTTP must present the mesh certificate and verify the server against
	// the mesh roots (tlsconfig.Client); its Timeout must be zero or
	// longer than Wait.
	HTTP          *http.Client
	Wait          time.Duration
	MinBackoff    time.Duration
	MaxBackoff    time.Duration
	NotFoundRetry time.Duration
	Logger        *slog.Logger
	// Registry, if set, gets podtls_sidecar_discovery_endpoints{upstream}
	// and podtls_sidecar_discovery_errors_total{upstream, reason}.
	Registry *metrics.Registry

	m *clientMetrics
}

type clientMetrics struct {
	endpoints *metrics.GaugeVec
	errors    *metrics.CounterVec
}

// errNotFound is the controller's 404: not a Service of the cluster.
var errNotFound = errors.New("not a Service of the cluster")

// Init registers the metrics; call it once before Watch.
func (c *Client) Init() {
	if c.Registry != nil && c.m == nil {
		c.m = &clientMetrics{
			endpoints: c.Registry.NewGaugeVec("podtls_sidecar_discovery_endpoints", "Endpoints a balanced upstream spreads its requests over (-1: unknown, the upstream's own address is dialed).", "upstream"),
			errors:    c.Registry.NewCounterVec("podtls_sidecar_discovery_errors_total", "Failed endpoint discovery polls by upstream and reason (not_found, unauthorized, unavailable, bad_answer).", "upstream", "reason"),
		}
	}
}

// Watch implements proxy.Discoverer: it polls upstream's endpoints until
// ctx ends, calling update with every new set. Errors keep the last set
// (the controller being away must not empty a working balancer); a 404
// hands over nil, so the upstream's own address is dialed.
func (c *Client) Watch(ctx context.Context, upstream string, update func([]string)) {
	log := c.logger().With("upstream", upstream)
	host, port, err := net.SplitHostPort(upstream)
	if err != nil {
		log.Error("endpoint discovery: bad upstream", "error", err)
		return
	}
	c.setGauge(upstream, -1)
	version, backoff, lastErr := "", time.Duration(0), ""
	for ctx.Err() == nil {
		eps, err := c.poll(ctx, host, port, version)
		var wait time.Duration
		switch {
		case err == nil:
			backoff, lastErr = 0, ""
			if eps.Version != version {
				version = eps.Version
				addrs := Addresses(eps)
				update(addrs)
				c.setGauge(upstream, len(addrs))
				log.Debug("endpoints", "version", version, "count", len(addrs))
			}
			continue
		case ctx.Err() != nil:
			return
		case errors.Is(err, errNotFound):
			if version != "" || lastErr != err.Error() {
				log.Info("endpoint discovery: the upstream is not a Service of the cluster; dialing it by name", "error", err)
			}
			version, lastErr = "", err.Error()
			update(nil)
			c.setGauge(upstream, -1)
			wait = c.dur(c.NotFoundRetry, DefaultNotFoundRetry)
		default:
			backoff = min(max(2*backoff, c.dur(c.MinBackoff, DefaultMinBackoff)), c.dur(c.MaxBackoff, DefaultMaxBackoff))
			if lastErr != err.Error() {
				log.Warn("endpoint discovery failed; keeping the endpoints known", "error", err, "retry_in", backoff)
			}
			lastErr, wait = err.Error(), backoff
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// Addresses are the HOST:PORT of the endpoints requests should go to: the
// ready ones, or, when none is ready, the serving ones (terminating pods
// still answering), as kube-proxy does.
func Addresses(eps *discoveryapi.Endpoints) []string {
	var ready, serving []string
	for _, e := range eps.Endpoints {
		a := net.JoinHostPort(e.Address, strconv.Itoa(int(e.Port)))
		switch {
		case e.Ready:
			ready = append(ready, a)
		case e.Serving:
			serving = append(serving, a)
		}
	}
	if len(ready) > 0 {
		return ready
	}
	if serving == nil {
		return []string{} // known and empty: not the same as unknown
	}
	return serving
}

func (c *Client) poll(ctx context.Context, host, port, version string) (*discoveryapi.Endpoints, error) {
	q := url.Values{"host": {host}, "port": {port}}
	wait := c.dur(c.Wait, DefaultWait)
	if version != "" {
		q.Set("version", version)
		q.Set("wait", wait.String())
	}
	reqCtx, cancel := context.WithTimeout(ctx, wait+15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(reqCtx, http.MethodGet, c.BaseURL+discoveryapi.EndpointsPath+"?"+q.Encode(), nil)
	if err != nil {
		return nil, fmt.Errorf("endpoint discovery: %w", err)
	}
	res, err := c.HTTP.Do(req)
	if err != nil {
		c.count(host, port, "unavailable")
		return nil, fmt.Errorf("endpoint discovery: %w", err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, 4<<20))
	if err != nil {
		c.count(host, port, "unavailable")
		return nil, fmt.Errorf("endpoint discovery: read answer: %w", err)
	}
	if res.StatusCode != http.StatusOK {
		var e discoveryapi.Error
		_ = json.Unmarshal(body, &e)
		reason := "unavailable"
		switch res.StatusCode {
		case http.StatusNotFound:
			c.count(host, port, "not_found")
			return nil, fmt.Errorf("%w: %s", errNotFound, e.Error)
		case http.StatusUnauthorized:
			reason = "unauthorized"
		case http.StatusBadRequest:
			reason = "bad_request"
		}
		c.count(host, port, reason)
		return nil, fmt.Errorf("endpoint discovery: %s: %s", res.Status, e.Error)
	}
	var eps discoveryapi.Endpoints
	if err := json.Unmarshal(body, &eps); err != nil {
		c.count(host, port, "bad_answer")
		return nil, fmt.Errorf("endpoint discovery: decode answer: %w", err)
	}
	if eps.Version == "" {
		c.count(host, port, "bad_answer")
		return nil, errors.New("endpoint discovery: answer without a version")
	}
	return &eps, nil
}

func (c *Client) count(host, port, reason string) {
	if c.m != nil {
		c.m.errors.With(net.JoinHostPort(host, port), reason).Inc()
	}
}

func (c *Client) setGauge(upstream string, n int) {
	if c.m != nil {
		c.m.endpoints.With(upstream).Set(int64(n))
	}
}

func (c *Client) logger() *slog.Logger {
	if c.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Logger.With("component", "discover")
}

func (*Client) dur(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}
