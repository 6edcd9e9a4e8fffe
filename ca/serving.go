package ca

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	"github.com/podtls/podtls/renewal"
)

// ServingSource is a TLS serving certificate issued by the Authority for the
// controller's own endpoints (CA server, webhook), renewed at two thirds of
// its lifetime. Point tls.Config.GetCertificate at GetCertificate; Start runs
// the renewal. It is a controller-runtime manager.Runnable without leader
// election.
type ServingSource struct {
	a        *Authority
	dnsNames []string
	ips      []net.IP
	ttl      time.Duration
	log      *slog.Logger
	now      func() time.Time
	cur      atomic.Pointer[tls.Certificate]
}

// NewServingSource issues the first certificate right away, so a server can
// use the source before Start runs. ttl 0 means the CA's default TTL.
func NewServingSource(a *Authority, dnsNames []string, ips []net.IP, ttl time.Duration, log *slog.Logger) (*ServingSource, error) {
	if log == nil {
		log = slog.Default()
	}
	s := &ServingSource{a: a, dnsNames: dnsNames, ips: ips, ttl: ttl, log: log, now: a.cfg.Now}
	if err := s.renew(); err != nil {
		return nil, err
	}
	return s, nil
}

// GetCertificate returns the current certificate; it never returns nil.
func (s *ServingSource) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return s.cur.Load(), nil
}

// Current returns the current certificate.
func (s *ServingSource) Current() *tls.Certificate { return s.cur.Load() }

// NeedLeaderElection tells controller-runtime to run the renewal on every replica.
func (s *ServingSource) NeedLeaderElection() bool { return false }

// Start renews the certificate until ctx ends. A failed renewal is retried
// every 30 seconds; the old certificate keeps being served meanwhile.
func (s *ServingSource) Start(ctx context.Context) error {
	for {
		wait := renewal.Serving.At(s.cur.Load().Leaf.NotBefore, s.cur.Load().Leaf.NotAfter, 0).Sub(s.now())
		t := time.NewTimer(max(wait, 0))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		for {
			err := s.renew()
			if err == nil {
				break
			}
			s.log.Error("renew serving certificate failed; retrying in 30s", "dns_names", s.dnsNames, "err", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(30 * time.Second):
			}
		}
	}
}

// Renew issues a new certificate now, for example after the CA's material
// changed (Refresher.OnChange), so the served chain follows the new intermediate.
func (s *ServingSource) Renew() error { return s.renew() }

func (s *ServingSource) renew() error {
	c, err := s.a.IssueServing(s.dnsNames, s.ips, s.ttl)
	if err != nil {
		return err
	}
	if c.Leaf == nil {
		return errors.New("serving certificate without parsed leaf")
	}
	s.cur.Store(c)
	s.log.Info("issued serving certificate", "dns_names", s.dnsNames, "not_after", c.Leaf.NotAfter)
	return nil
}

// String describes the source for logs.
func (s *ServingSource) String() string {
	return fmt.Sprintf("serving certificate for %v %v", s.dnsNames, s.ips)
}
