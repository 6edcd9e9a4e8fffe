package discovery

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"time"

	"github.com/podtls/podtls/discovery/discoveryapi"
)

// Limits on query parameters.
const (
	maxHostBytes    = 255
	maxVersionBytes = 64
)

// query is a parsed discovery request.
type query struct {
	host    string
	port    int32
	version string
	wait    time.Duration
}

// parseQuery reads host, port, version and wait (see discoveryapi). Each
// may appear once; host and port are required; wait is a Go duration
// ("30s", "1m"), at least 0, capped at discoveryapi.MaxWait. Other
// parameters are ignored, so newer clients can add optional ones.
func parseQuery(v url.Values) (query, error) {
	for _, k := range []string{"host", "port", "version", "wait"} {
		if n := len(v[k]); n > 1 {
			return query{}, fmt.Errorf("parameter %s given %d times", k, n)
		}
	}
	q := query{host: v.Get("host"), version: v.Get("version")}
	if q.host == "" {
		return query{}, errors.New("parameter host is required")
	}
	if len(q.host) > maxHostBytes {
		return query{}, fmt.Errorf("parameter host is longer than %d bytes", maxHostBytes)
	}
	if len(q.version) > maxVersionBytes {
		return query{}, fmt.Errorf("parameter version is longer than %d bytes", maxVersionBytes)
	}
	port, err := strconv.ParseInt(v.Get("port"), 10, 32)
	if err != nil || port < 1 || port > 65535 {
		return query{}, fmt.Errorf("parameter port %q: want a port number 1-65535", v.Get("port"))
	}
	q.port = int32(port)
	if w := v.Get("wait"); w != "" {
		d, err := time.ParseDuration(w)
		if err != nil {
			return query{}, fmt.Errorf("parameter wait: %w", err)
		}
		if d < 0 {
			return query{}, fmt.Errorf("parameter wait %q is negative", w)
		}
		q.wait = min(d, discoveryapi.MaxWait)
	}
	return q, nil
}
