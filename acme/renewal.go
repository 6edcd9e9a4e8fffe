package acme

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/go-acme/lego/v4/acme"
	"github.com/go-acme/lego/v4/acme/api"
	"github.com/go-acme/lego/v4/certificate"

	"github.com/podtls/podtls/acme/status"
	"github.com/podtls/podtls/renewal"
)

// Bounds on how soon to ask the ARI endpoint again (RFC 9773 section 4.3.2
// asks clients to clamp the server's Retry-After to reasonable values).
const (
	ariMinRecheck     = time.Minute
	ariMaxRecheck     = 24 * time.Hour
	ariDefaultRecheck = 6 * time.Hour
	// ariErrorRecheck is how soon to try ARI again after it failed.
	ariErrorRecheck = time.Hour
)

// RenewalTime says when leaf should be renewed: at a random point of the
// server's ARI window when ARI is enabled and offered, otherwise at
// LifetimeFraction of its validity. An ARI failure is not an error: the
// lifetime rule answers, with RecheckAfter set so ARI is asked again later,
// and a warning is logged.
func (i *Issuer) RenewalTime(ctx context.Context, leaf *x509.Certificate) (Renewal, error) {
	if leaf == nil {
		return Renewal{}, errors.New("acme renewal time: no certificate")
	}
	byLifetime := Renewal{At: LifetimeRenewal(leaf, i.cfg.Renewal.LifetimeFraction), Source: status.RenewalLifetime}
	if !*i.cfg.Renewal.ARI {
		return byLifetime, nil
	}
	win, retryAfter, err := i.renewalInfo(ctx, leaf)
	if errors.Is(err, api.ErrNoARI) {
		return byLifetime, nil
	}
	if err != nil {
		if ctx.Err() != nil {
			return Renewal{}, ctxErr(ctx, err)
		}
		i.log.Warn("ACME renewal information unavailable; renewing by lifetime", "serial", leaf.SerialNumber.Text(16), "error", err)
		byLifetime.RecheckAfter = ariErrorRecheck
		return byLifetime, nil
	}
	return ariRenewal(win, retryAfter, leaf, i.opts.Now(), i.opts.Rand()), nil
}

// window is an ARI suggested renewal window.
type window struct{ Start, End time.Time }

// renewalInfo fetches the ARI window of leaf (RFC 9773 section 4.1: an
// unauthenticated GET of <renewalInfo>/<certID>).
func (i *Issuer) renewalInfo(ctx context.Context, leaf *x509.Certificate) (window, time.Duration, error) {
	dir, err := i.directory(ctx)
	if err != nil {
		return window{}, 0, err
	}
	if dir.RenewalInfo == "" {
		return window{}, 0, api.ErrNoARI
	}
	certID, err := certificate.MakeARICertID(leaf)
	if err != nil {
		return window{}, 0, fmt.Errorf("renewal info: certificate ID: %w", err)
	}
	url := strings.TrimSuffix(dir.RenewalInfo, "/") + "/" + certID
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return window{}, 0, fmt.Errorf("renewal info: %w", err)
	}
	req.Header.Set("User-Agent", i.opts.UserAgent)
	resp, err := i.httpc.Do(req)
	if err != nil {
		return window{}, 0, fmt.Errorf("renewal info: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return window{}, 0, fmt.Errorf("renewal info %s: %s", url, resp.Status)
	}
	var info acme.RenewalInfoResponse
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&info); err != nil {
		return window{}, 0, fmt.Errorf("renewal info %s: %w", url, err)
	}
	w := window{Start: info.SuggestedWindow.Start, End: info.SuggestedWindow.End}
	if w.Start.IsZero() || w.End.Before(w.Start) {
		return window{}, 0, fmt.Errorf("renewal info %s: invalid suggested window %s..%s", url, w.Start, w.End)
	}
	var retryAfter time.Duration
	if v := resp.Header.Get("Retry-After"); v != "" {
		if retryAfter, err = api.ParseRetryAfter(v); err != nil {
			i.log.Debug("ignoring a malformed Retry-After of the renewal info", "value", v)
			retryAfter = 0
		}
	}
	return w, retryAfter, nil
}

// ariRenewal picks the time in the window that draw in [0,1) gives
// (renewal.InWindow: uniformly at random, RFC 9773 section 4.2), or now when
// the window has begun, never after NotAfter.
func ariRenewal(w window, retryAfter time.Duration, leaf *x509.Certificate, now time.Time, draw float64) Renewal {
	at := renewal.InWindow(w.Start, w.End, now, leaf.NotAfter, draw)
	switch {
	case retryAfter <= 0:
		retryAfter = ariDefaultRecheck
	case retryAfter < ariMinRecheck:
		retryAfter = ariMinRecheck
	case retryAfter > ariMaxRecheck:
		retryAfter = ariMaxRecheck
	}
	return Renewal{At: at.UTC(), Source: status.RenewalARI, RecheckAfter: retryAfter}
}

// LifetimeRenewal is NotBefore + fraction of the validity period
// (renewal.Fraction), in UTC.
func LifetimeRenewal(leaf *x509.Certificate, fraction float64) time.Time {
	return renewal.Fraction(fraction).At(leaf.NotBefore, leaf.NotAfter, 0).UTC()
}
