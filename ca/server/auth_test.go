package server

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podtls/podtls/ca"
	"github.com/podtls/podtls/ca/signapi"
)

// fakeReviews answers TokenReviews from a fixed status per token and counts calls.
type fakeReviews struct {
	status map[string]authnv1.TokenReviewStatus
	err    error
	calls  int
}

func (f *fakeReviews) Create(_ context.Context, r *authnv1.TokenReview, _ metav1.CreateOptions) (*authnv1.TokenReview, error) {
	f.calls++
	if f.err != nil {
		return nil, f.err
	}
	out := r.DeepCopy()
	out.Status = f.status[r.Spec.Token]
	return out, nil
}

// jwtWithExp builds an unsigned token with the given payload JSON.
func jwtWithPayload(payload string) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"RS256"}`)) + "." + enc([]byte(payload)) + ".c2ln"
}

func jwtWithExp(exp time.Time) string {
	return jwtWithPayload(fmt.Sprintf(`{"exp":%d,"sub":"x"}`, exp.Unix()))
}

func okStatus(user string, audiences ...string) authnv1.TokenReviewStatus {
	return authnv1.TokenReviewStatus{
		Authenticated: true,
		Audiences:     audiences,
		User: authnv1.UserInfo{Username: user, Extra: map[string]authnv1.ExtraValue{
			extraPodName: {"web-0"}, extraPodUID: {"uid-1"},
		}},
	}
}

func TestTokenReviewAuthenticator(t *testing.T) {
	now := time.Date(2026, 11, 24, 9, 0, 0, 0, time.UTC)
	clock := now
	tokValid := jwtWithExp(now.Add(time.Hour))
	tokShort := jwtWithExp(now.Add(2 * time.Minute))
	tokExpired := jwtWithExp(now.Add(-time.Minute))
	tokNoExp := jwtWithPayload(`{"sub":"x"}`)
	tokWrongAud := jwtWithExp(now.Add(time.Hour)) + "a"
	tokUser := jwtWithExp(now.Add(time.Hour)) + "b"
	tokDenied := jwtWithExp(now.Add(time.Hour)) + "c"
	reviews := &fakeReviews{status: map[string]authnv1.TokenReviewStatus{
		tokValid:    okStatus("system:serviceaccount:demo:web", signapi.Audience),
		tokShort:    okStatus("system:serviceaccount:demo:web", signapi.Audience),
		tokExpired:  okStatus("system:serviceaccount:demo:web", signapi.Audience),
		tokNoExp:    okStatus("system:serviceaccount:demo:web", signapi.Audience),
		tokWrongAud: okStatus("system:serviceaccount:demo:web", "https://kubernetes.default.svc"),
		tokUser:     okStatus("alice", signapi.Audience),
		tokDenied:   {Authenticated: false, Error: "service account token has been invalidated"},
	}}
	a := NewTokenReviewAuthenticator(reviews, TokenReviewOptions{Now: func() time.Time { return clock }})
	ctx := t.Context()

	want := ca.Caller{Namespace: "demo", ServiceAccount: "web", PodName: "web-0", PodUID: "uid-1"}
	got, err := a.Authenticate(ctx, tokValid)
	if err != nil || got != want {
		t.Fatalf("Authenticate = %+v, %v; want %+v", got, err, want)
	}
	if _, err := a.Authenticate(ctx, tokValid); err != nil || reviews.calls != 1 {
		t.Fatalf("second call: err %v, %d reviews; want 1 (cached)", err, reviews.calls)
	}

	for name, tok := range map[string]string{"expired": tokExpired, "wrong audience": tokWrongAud, "not a service account": tokUser, "invalidated": tokDenied, "empty": ""} {
		if _, err := a.Authenticate(ctx, tok); !errors.Is(err, ErrUnauthenticated) {
			t.Errorf("%s: err = %v, want ErrUnauthenticated", name, err)
		}
	}
	if _, err := a.Authenticate(ctx, tokDenied); err == nil || !strings.Contains(err.Error(), "invalidated") {
		t.Errorf("API server reason not passed on: %v", err)
	}

	// A token without exp is refused without asking the API server.
	calls := reviews.calls
	if _, err := a.Authenticate(ctx, tokNoExp); !errors.Is(err, ErrUnauthenticated) || reviews.calls != calls {
		t.Errorf("token without exp: err %v, %d reviews; want ErrUnauthenticated and no review", err, reviews.calls-calls)
	}

	// The cache entry ends with the token's exp (2 minutes) ...
	if _, err := a.Authenticate(ctx, tokShort); err != nil {
		t.Fatal(err)
	}
	clock = now.Add(3 * time.Minute)
	if _, err := a.Authenticate(ctx, tokShort); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("expired cached token: err = %v, want ErrUnauthenticated", err)
	}
	// ... or after CacheTTL (10 minutes), whichever is first.
	calls = reviews.calls
	clock = now.Add(9 * time.Minute)
	if _, err := a.Authenticate(ctx, tokValid); err != nil || reviews.calls != calls {
		t.Fatalf("within cache TTL: err %v, reviews %d -> %d", err, calls, reviews.calls)
	}
	clock = now.Add(11 * time.Minute)
	if _, err := a.Authenticate(ctx, tokValid); err != nil || reviews.calls != calls+1 {
		t.Fatalf("after cache TTL: err %v, reviews %d -> %d, want a new review", err, calls, reviews.calls)
	}

	// An unreachable API server is not the caller's fault: not ErrUnauthenticated.
	broken := NewTokenReviewAuthenticator(&fakeReviews{err: errors.New("connection refused")}, TokenReviewOptions{})
	if _, err := broken.Authenticate(ctx, jwtWithExp(time.Now().Add(time.Hour))); err == nil || errors.Is(err, ErrUnauthenticated) {
		t.Errorf("API error: err = %v, want a non-authentication error", err)
	}
}

func TestTokenReviewRateLimited(t *testing.T) {
	reviews := &fakeReviews{status: map[string]authnv1.TokenReviewStatus{}}
	a := NewTokenReviewAuthenticator(reviews, TokenReviewOptions{ReviewRate: 0.001, ReviewBurst: 3})
	valid := jwtWithExp(time.Now().Add(time.Hour)) + "v"
	reviews.status[valid] = okStatus("system:serviceaccount:demo:web", signapi.Audience)
	if _, err := a.Authenticate(t.Context(), valid); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if _, err := a.Authenticate(t.Context(), jwtWithExp(time.Now().Add(time.Hour))+fmt.Sprint(i)); !errors.Is(err, ErrUnauthenticated) {
			t.Fatalf("bogus token %d: %v", i, err)
		}
	}
	if _, err := a.Authenticate(t.Context(), jwtWithExp(time.Now().Add(time.Hour))+"x"); !errors.Is(err, ErrReviewRateLimited) {
		t.Fatalf("4th review: err = %v, want ErrReviewRateLimited", err)
	}
	if _, err := a.Authenticate(t.Context(), valid); err != nil {
		t.Fatalf("cached token refused while reviews are rate limited: %v", err)
	}
	if reviews.calls != 3 {
		t.Errorf("%d reviews, want 3", reviews.calls)
	}
}

func TestTokenCacheBounded(t *testing.T) {
	reviews := &fakeReviews{status: map[string]authnv1.TokenReviewStatus{}}
	now := time.Now()
	var tokens []string
	for i := range 50 {
		tok := jwtWithExp(now.Add(time.Hour)) + fmt.Sprint(i)
		tokens = append(tokens, tok)
		reviews.status[tok] = okStatus("system:serviceaccount:demo:web", signapi.Audience)
	}
	a := NewTokenReviewAuthenticator(reviews, TokenReviewOptions{CacheSize: 10})
	for _, tok := range tokens {
		if _, err := a.Authenticate(t.Context(), tok); err != nil {
			t.Fatal(err)
		}
		if n := a.cacheLen(); n > 10 {
			t.Fatalf("cache holds %d entries, limit 10", n)
		}
	}
}

func TestParseServiceAccountUsername(t *testing.T) {
	for _, tc := range []struct {
		user, ns, sa string
		ok           bool
	}{
		{"system:serviceaccount:demo:web", "demo", "web", true},
		{"system:serviceaccount:demo", "", "", false},
		{"system:serviceaccount::web", "", "", false},
		{"system:serviceaccount:demo:", "", "", false},
		{"system:serviceaccount:demo:web:x", "", "", false},
		{"system:node:n1", "", "", false},
		{"admin", "", "", false},
	} {
		ns, sa, err := ParseServiceAccountUsername(tc.user)
		if (err == nil) != tc.ok || ns != tc.ns || sa != tc.sa {
			t.Errorf("ParseServiceAccountUsername(%q) = %q, %q, %v", tc.user, ns, sa, err)
		}
	}
}

func TestTokenExpiry(t *testing.T) {
	for _, tc := range []struct {
		name  string
		token string
		want  int64
		ok    bool
	}{
		{"integer", jwtWithPayload(`{"exp":1800000000}`), 1800000000, true},
		{"float", jwtWithPayload(`{"exp":1800000000.5}`), 1800000000, true},
		{"padded base64", strings.Replace(jwtWithPayload(`{"exp":1800000000}`), ".c2ln", "", 1) + "==.c2ln", 1800000000, true},
		{"missing", jwtWithPayload(`{"sub":"x"}`), 0, false},
		{"string", jwtWithPayload(`{"exp":"soon"}`), 0, false},
		{"negative", jwtWithPayload(`{"exp":-5}`), 0, false},
		{"huge", jwtWithPayload(`{"exp":1e300}`), 0, false},
		{"not json", jwtWithPayload(`exp=1`), 0, false},
		{"two parts", "a.b", 0, false},
		{"bad base64", "a.!!!.c", 0, false},
		{"empty", "", 0, false},
	} {
		got, ok := TokenExpiry(tc.token)
		if ok != tc.ok || (ok && got.Unix() != tc.want) {
			t.Errorf("%s: TokenExpiry = %v, %v; want %d, %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}
}

func TestLimiterBounded(t *testing.T) {
	l := newLimiter(1, 1, 100)
	now := time.Now()
	for i := range 1000 {
		l.allow(fmt.Sprint(i), now)
	}
	if n := len(l.buckets); n > 100 {
		t.Fatalf("%d buckets, limit 100", n)
	}
	if !l.allow("x", now) || l.allow("x", now) {
		t.Error("burst of 1 not enforced")
	}
	if !l.allow("x", now.Add(time.Second)) {
		t.Error("bucket did not refill after 1s at 1/s")
	}
}
