package workloads

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/podtls/podtls/ca"
	"github.com/podtls/podtls/ca/signapi"
	"github.com/podtls/podtls/contract"
	"github.com/podtls/podtls/identity"
	"github.com/podtls/podtls/tlsconfig"
)

// Signer signs a CSR for a caller: ca.Authority.
type Signer interface {
	Sign(ctx context.Context, caller ca.Caller, csrPEM []byte, ttl time.Duration) (*ca.Issued, error)
}

// HandlerOptions configure a Handler.
type HandlerOptions struct {
	Checker     *Checker
	Signer      Signer
	TrustDomain string
	TrustPool   func() *x509.CertPool // the CA's current roots, for renewals
	// Rate and Burst per caller (remote address for joins, identity for
	// renewals): 1 per second, burst 5, if zero.
	Rate   rate.Limit
	Burst  int
	Logger *slog.Logger
	Now    func() time.Time
}

// Handler serves signapi.JoinPath and signapi.RenewPath on the CA's port.
type Handler struct {
	o     HandlerOptions
	allow *identity.Matcher
	log   *slog.Logger

	mu     sync.Mutex
	limits map[string]*rate.Limiter
}

// NewHandler validates o.
func NewHandler(o HandlerOptions) (*Handler, error) {
	if o.Checker == nil || o.Signer == nil || o.TrustPool == nil {
		return nil, errors.New("workloads: Checker, Signer and TrustPool are required")
	}
	allow, err := identity.NewMatcher(o.TrustDomain, nil)
	if err != nil {
		return nil, fmt.Errorf("workloads: trust domain: %w", err)
	}
	if o.Rate == 0 {
		o.Rate, o.Burst = rate.Every(time.Second), 5
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Handler{o: o, allow: allow, log: o.Logger.With("component", "workloads"), limits: map[string]*rate.Limiter{}}, nil
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, http.StatusMethodNotAllowed, "method not allowed; use POST")
		return
	}
	var (
		caller ca.Caller
		reg    string // the registration (Service) name
		what   string
		status int
	)
	// The body first: a malformed request must not consume a join token.
	req, ttl, err := signapi.DecodeSignRequest(http.MaxBytesReader(w, r.Body, signapi.MaxRequestBytes))
	if err != nil {
		h.log.Info("workload request refused", "remote", r.RemoteAddr, "status", http.StatusBadRequest, "reason", err.Error())
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	switch r.URL.Path {
	case signapi.JoinPath:
		what = "join"
		caller, reg, status, err = h.joiner(r)
	case signapi.RenewPath:
		what = "renewal"
		caller, reg, status, err = h.renewer(r)
	default:
		writeError(w, http.StatusNotFound, "not found")
		return
	}
	log := h.log.With("remote", r.RemoteAddr, "request", what)
	if err != nil {
		if status >= 500 {
			log.Error("workload request failed", "err", err)
		} else {
			log.Info("workload request refused", "status", status, "reason", err.Error())
		}
		writeError(w, status, err.Error())
		return
	}
	issued, err := h.o.Signer.Sign(r.Context(), caller, []byte(req.CSR), ttl)
	if err != nil {
		log.Info("workload CSR refused", "namespace", caller.Namespace, "service_account", caller.ServiceAccount, "reason", err.Error())
		writeError(w, http.StatusForbidden, err.Error())
		return
	}
	leaf := issued.Certificate
	h.record(r.Context(), caller, reg, contract.WorkloadCertState{Serial: hex.EncodeToString(leaf.SerialNumber.Bytes()),
		NotAfter: leaf.NotAfter.UTC(), Issued: h.o.Now().UTC().Truncate(time.Second), Via: what}, log)
	log.Info("certificate issued to a workload", "namespace", caller.Namespace, "service_account", caller.ServiceAccount,
		"serial", hex.EncodeToString(leaf.SerialNumber.Bytes()), "not_after", leaf.NotAfter)
	writeJSON(w, http.StatusOK, signapi.SignResponse{CertificateChain: string(issued.ChainPEM), TrustBundle: string(issued.TrustBundlePEM),
		NotAfter: leaf.NotAfter.UTC().Format(time.RFC3339)})
}

// joiner authenticates a join: rate-limited per remote address (nothing is
// known of the caller before its token is reviewed), then Checker.Join.
func (h *Handler) joiner(r *http.Request) (ca.Caller, string, int, error) {
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	if !h.allowNow("join/" + host) {
		return ca.Caller{}, "", http.StatusTooManyRequests, errors.New("too many join requests; retry later")
	}
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || strings.TrimSpace(token) == "" {
		return ca.Caller{}, "", http.StatusUnauthorized, errors.New("missing join token (Authorization: Bearer <token from podtls workload register>)")
	}
	caller, reg, err := h.o.Checker.Join(r.Context(), strings.TrimSpace(token))
	return caller, reg.Name, statusOf(err), err
}

// renewer authenticates a renewal by the machine's current certificate.
func (h *Handler) renewer(r *http.Request) (ca.Caller, string, int, error) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return ca.Caller{}, "", http.StatusUnauthorized, errors.New("renewal needs the current certificate as the TLS client certificate")
	}
	chain := r.TLS.PeerCertificates
	if err := tlsconfig.VerifyClient(h.o.TrustPool(), h.allow, chain, h.o.Now()); err != nil {
		return ca.Caller{}, "", http.StatusUnauthorized, fmt.Errorf("client certificate: %w", err)
	}
	raw, err := tlsconfig.SPIFFEID(chain[0])
	if err != nil {
		return ca.Caller{}, "", http.StatusUnauthorized, fmt.Errorf("client certificate: %w", err)
	}
	id, err := identity.Parse(raw)
	if err != nil {
		return ca.Caller{}, "", http.StatusUnauthorized, fmt.Errorf("client certificate: %w", err)
	}
	if !h.allowNow("renew/" + raw) {
		return ca.Caller{}, "", http.StatusTooManyRequests, errors.New("too many renewals; retry later")
	}
	caller, reg, err := h.o.Checker.Renewal(r.Context(), id.Namespace, id.ServiceAccount)
	return caller, reg, statusOf(err), err
}

// record writes the issued certificate on the registration's Service
// (podtls status, podtls workload list); a failure is logged, not fatal.
func (h *Handler) record(ctx context.Context, caller ca.Caller, reg string, st contract.WorkloadCertState, log *slog.Logger) {
	v, _ := json.Marshal(st)
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{contract.WorkloadCertificate: string(v)}}})
	if _, err := h.o.Checker.Kube.CoreV1().Services(caller.Namespace).Patch(ctx, reg, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		log.Warn("cannot record the certificate on the registration", "service", caller.Namespace+"/"+reg, "err", err)
	}
}

func statusOf(err error) int {
	switch {
	case err == nil:
		return http.StatusOK
	case errors.Is(err, ErrRefused):
		return http.StatusForbidden
	default:
		return http.StatusServiceUnavailable
	}
}

func (h *Handler) allowNow(key string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	l := h.limits[key]
	if l == nil {
		if len(h.limits) > 10000 {
			clear(h.limits) // bounded memory; a reset only grants a new burst
		}
		l = rate.NewLimiter(h.o.Rate, h.o.Burst)
		h.limits[key] = l
	}
	return l.AllowN(h.o.Now(), 1)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, signapi.Error{Message: msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
