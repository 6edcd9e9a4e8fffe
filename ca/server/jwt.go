package server

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"math"
	"strings"
	"time"
)

// maxTokenBytes bounds the tokens this server looks at; projected tokens are
// around 1 KB.
const maxTokenBytes = 16 << 10

// TokenExpiry reads the "exp" claim of a JWT without verifying anything. It
// is used only to bound how long a positive TokenReview is cached; the token
// is still validated by the API server. ok is false if the token is not a
// JWT or has no usable numeric exp.
func TokenExpiry(token string) (exp time.Time, ok bool) {
	if len(token) > maxTokenBytes {
		return time.Time{}, false
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return time.Time{}, false
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return time.Time{}, false
	}
	var claims struct {
		Exp json.Number `json:"exp"`
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	if err := dec.Decode(&claims); err != nil || claims.Exp == "" {
		return time.Time{}, false
	}
	f, err := claims.Exp.Float64()
	// Reject NaN, infinities, negative and absurd values (beyond year 9999).
	if err != nil || math.IsNaN(f) || f <= 0 || f > 253402300799 {
		return time.Time{}, false
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)), true
}
