package server

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	authnclient "k8s.io/client-go/kubernetes/typed/authentication/v1"

	"github.com/podtls/podtls/ca"
	"github.com/podtls/podtls/ca/signapi"
)

// ErrUnauthenticated means the token is not valid for this CA (HTTP 401).
var ErrUnauthenticated = errors.New("unauthenticated")

// ErrReviewRateLimited means too many tokens needed a TokenReview at once
// (HTTP 429); cached tokens are not affected.
var ErrReviewRateLimited = errors.New("too many token reviews")

// Authenticator turns a bearer token into a caller. Errors wrapping
// ErrUnauthenticated become 401; other errors (the API server is unreachable)
// become 503.
type Authenticator interface {
	Authenticate(ctx context.Context, token string) (ca.Caller, error)
}

// Extra keys of a TokenReview for a token bound to a pod.
const (
	extraPodName = "authentication.kubernetes.io/pod-name"
	extraPodUID  = "authentication.kubernetes.io/pod-uid"
)

// TokenReviewOptions tune a TokenReviewAuthenticator. Zero values take defaults.
type TokenReviewOptions struct {
	// Audience the token must carry; signapi.Audience if empty.
	Audience string
	// CacheTTL caps how long a positive review is reused (10 minutes). An
	// entry never outlives the token's own expiry.
	CacheTTL time.Duration
	// CacheSize bounds the number of cached reviews (10000).
	CacheSize int
	// ReviewRate and ReviewBurst bound the TokenReviews sent to the API server
	// for tokens not in the cache (100/s, burst 200), so a flood of bogus
	// tokens cannot turn into a flood of API calls.
	ReviewRate  rate.Limit
	ReviewBurst int
	// Now returns the current time; time.Now if nil.
	Now func() time.Time
}

// TokenReviewAuthenticator authenticates projected service-account tokens
// with the Kubernetes TokenReview API, and caches positive answers keyed by
// the token's SHA-256 (never the token itself).
type TokenReviewAuthenticator struct {
	reviews authnclient.TokenReviewInterface
	opts    TokenReviewOptions
	limit   *rate.Limiter

	mu    sync.Mutex
	cache map[[sha256.Size]byte]cacheEntry
}

type cacheEntry struct {
	caller  ca.Caller
	expires time.Time
}

// NewTokenReviewAuthenticator returns an authenticator using reviews, for
// example kubernetes.Interface.AuthenticationV1().TokenReviews().
// RBAC: create tokenreviews.
func NewTokenReviewAuthenticator(reviews authnclient.TokenReviewInterface, opts TokenReviewOptions) *TokenReviewAuthenticator {
	if opts.Audience == "" {
		opts.Audience = signapi.Audience
	}
	if opts.CacheTTL <= 0 {
		opts.CacheTTL = 10 * time.Minute
	}
	if opts.CacheSize <= 0 {
		opts.CacheSize = 10000
	}
	if opts.ReviewRate == 0 {
		opts.ReviewRate = 100
	}
	if opts.ReviewBurst == 0 {
		opts.ReviewBurst = 200
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &TokenReviewAuthenticator{
		reviews: reviews,
		opts:    opts,
		limit:   rate.NewLimiter(opts.ReviewRate, opts.ReviewBurst),
		cache:   map[[sha256.Size]byte]cacheEntry{},
	}
}

// Authenticate implements Authenticator.
func (a *TokenReviewAuthenticator) Authenticate(ctx context.Context, token string) (ca.Caller, error) {
	if token == "" {
		return ca.Caller{}, fmt.Errorf("%w: no bearer token", ErrUnauthenticated)
	}
	key := sha256.Sum256([]byte(token))
	now := a.opts.Now()
	if c, ok := a.lookup(key, now); ok {
		return c, nil
	}
	// The API server checks the signature and expiry. exp is read here to
	// bound the cache entry and to turn away, without an API call, what
	// cannot be a valid projected token: those always carry exp.
	exp, hasExp := TokenExpiry(token)
	if !hasExp {
		return ca.Caller{}, fmt.Errorf("%w: not a projected service-account token (a JWT with exp)", ErrUnauthenticated)
	}
	if !now.Before(exp) {
		return ca.Caller{}, fmt.Errorf("%w: token expired", ErrUnauthenticated)
	}
	if !a.limit.AllowN(now, 1) {
		return ca.Caller{}, ErrReviewRateLimited
	}

	review, err := a.reviews.Create(ctx, &authnv1.TokenReview{
		Spec: authnv1.TokenReviewSpec{Token: token, Audiences: []string{a.opts.Audience}},
	}, metav1.CreateOptions{})
	if err != nil {
		return ca.Caller{}, fmt.Errorf("token review: %w", err)
	}
	caller, err := a.callerFromReview(review)
	if err != nil {
		return ca.Caller{}, err
	}
	a.store(key, caller, now, exp)
	return caller, nil
}

// callerFromReview checks a TokenReview's status and extracts the caller.
func (a *TokenReviewAuthenticator) callerFromReview(r *authnv1.TokenReview) (ca.Caller, error) {
	st := r.Status
	if !st.Authenticated {
		msg := "token not authenticated"
		if st.Error != "" {
			// The API server's reason (expired, wrong audience, invalidated)
			// is safe to show: it contains no token material.
			msg += ": " + st.Error
		}
		return ca.Caller{}, fmt.Errorf("%w: %s", ErrUnauthenticated, msg)
	}
	if !slices.Contains(st.Audiences, a.opts.Audience) {
		return ca.Caller{}, fmt.Errorf("%w: token audiences %q do not include %q", ErrUnauthenticated, st.Audiences, a.opts.Audience)
	}
	ns, sa, err := ParseServiceAccountUsername(st.User.Username)
	if err != nil {
		return ca.Caller{}, fmt.Errorf("%w: %w", ErrUnauthenticated, err)
	}
	c := ca.Caller{Namespace: ns, ServiceAccount: sa}
	if v := st.User.Extra[extraPodName]; len(v) == 1 {
		c.PodName = v[0]
	}
	if v := st.User.Extra[extraPodUID]; len(v) == 1 {
		c.PodUID = v[0]
	}
	return c, nil
}

// ParseServiceAccountUsername splits "system:serviceaccount:NS:SA".
func ParseServiceAccountUsername(user string) (namespace, serviceAccount string, err error) {
	const prefix = "system:serviceaccount:"
	rest, ok := strings.CutPrefix(user, prefix)
	if !ok {
		return "", "", fmt.Errorf("user %q is not a service account", user)
	}
	ns, sa, ok := strings.Cut(rest, ":")
	if !ok || ns == "" || sa == "" || strings.Contains(sa, ":") {
		return "", "", fmt.Errorf("user %q is not of the form %sNAMESPACE:NAME", user, prefix)
	}
	return ns, sa, nil
}

func (a *TokenReviewAuthenticator) lookup(key [sha256.Size]byte, now time.Time) (ca.Caller, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	e, ok := a.cache[key]
	if !ok {
		return ca.Caller{}, false
	}
	if !now.Before(e.expires) {
		delete(a.cache, key)
		return ca.Caller{}, false
	}
	return e.caller, true
}

func (a *TokenReviewAuthenticator) store(key [sha256.Size]byte, c ca.Caller, now, exp time.Time) {
	expires := now.Add(a.opts.CacheTTL)
	if exp.Before(expires) {
		expires = exp
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.cache) >= a.opts.CacheSize {
		for k, e := range a.cache {
			if !now.Before(e.expires) {
				delete(a.cache, k)
			}
		}
		// Still full: drop a tenth, arbitrary entries (map order is random),
		// so the sweep above runs rarely; their owners just get reviewed again.
		for k := range a.cache {
			if len(a.cache) < a.opts.CacheSize-a.opts.CacheSize/10 {
				break
			}
			delete(a.cache, k)
		}
	}
	a.cache[key] = cacheEntry{caller: c, expires: expires}
}

// cacheLen is for tests.
func (a *TokenReviewAuthenticator) cacheLen() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.cache)
}
