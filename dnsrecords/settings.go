package dnsrecords

import (
	"errors"
	"fmt"
	"net"
	"strings"
)

// RFC2136FromProvider builds the zone client from the rfc2136 provider's
// settings, keyed by lego's environment variable names as in the issuer
// configuration (RFC2136_NAMESERVER, RFC2136_TSIG_ALGORITHM,
// RFC2136_TSIG_KEY, RFC2136_TSIG_SECRET). The key needs update rights for
// A, AAAA, CNAME and TXT in zone and zone transfers.
func RFC2136FromProvider(zone string, v map[string]string) (*RFC2136, error) {
	server := strings.TrimSpace(v["RFC2136_NAMESERVER"])
	if server == "" {
		return nil, errors.New("RFC2136_NAMESERVER is required")
	}
	if _, _, err := net.SplitHostPort(server); err != nil {
		server = net.JoinHostPort(server, "53")
	}
	key, secret := strings.TrimSpace(v["RFC2136_TSIG_KEY"]), strings.TrimSpace(v["RFC2136_TSIG_SECRET"])
	if key == "" || secret == "" {
		return nil, errors.New("records need a TSIG key: RFC2136_TSIG_KEY and RFC2136_TSIG_SECRET in the credentials Secret")
	}
	if strings.TrimSuffix(zone, ".") == "" {
		return nil, fmt.Errorf("zone %q: required", zone)
	}
	return &RFC2136{Server: server, Zone: zone, KeyName: key, Secret: secret, Algorithm: v["RFC2136_TSIG_ALGORITHM"]}, nil
}
