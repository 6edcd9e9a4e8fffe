package providers

import (
	"errors"
	"time"

	"github.com/go-acme/lego/v4/challenge"
	"github.com/go-acme/lego/v4/providers/dns/rfc2136"
)

// DefaultTSIGAlgorithm is hmac-sha256: lego's default, hmac-sha1, is refused
// by BIND keys made with today's tsig-keygen (BADKEY).
const DefaultTSIGAlgorithm = "hmac-sha256"

func init() {
	register("rfc2136", &provider{
		doc: "RFC 2136 dynamic updates with TSIG (BIND, Knot, PowerDNS, Windows DNS)",
		keys: []Key{
			{Name: "RFC2136_NAMESERVER", Required: true, Aliases: []string{"DNSUPDATE_NAMESERVER"}, Doc: `primary server, "host" or "host:port"`},
			{Name: "RFC2136_TSIG_KEY", Aliases: []string{"DNSUPDATE_TSIG_KEY"}, Doc: "TSIG key name"},
			{Name: "RFC2136_TSIG_SECRET", Secret: true, Aliases: []string{"DNSUPDATE_TSIG_SECRET"}, Doc: "TSIG secret, base64"},
			{Name: "RFC2136_TSIG_ALGORITHM", Aliases: []string{"DNSUPDATE_TSIG_ALGORITHM"}, Doc: "hmac-sha256 (default here), hmac-sha1, hmac-sha224, hmac-sha384, hmac-sha512"},
			{Name: "RFC2136_DNS_TIMEOUT", Aliases: []string{"DNSUPDATE_DNS_TIMEOUT"}, Doc: "timeout of one update (default 10s)"},
			{Name: "RFC2136_ZONES", Aliases: []string{"DNSUPDATE_ZONES"}, Doc: "comma-separated zones to update (default: found by SOA query to the nameserver)"},
			{Name: "RFC2136_SEQUENCE_INTERVAL", Aliases: []string{"DNSUPDATE_SEQUENCE_INTERVAL"}, Doc: "pause between the names of one order (default 0 here; lego's is 60s)"},
		},
		build: func(v *values, c Common) (challenge.Provider, error) {
			cfg := rfc2136.NewDefaultConfig()
			cfg.Nameserver = v.get("RFC2136_NAMESERVER")
			cfg.TSIGKey = v.get("RFC2136_TSIG_KEY")
			cfg.TSIGSecret = v.get("RFC2136_TSIG_SECRET")
			if (cfg.TSIGKey == "") != (cfg.TSIGSecret == "") {
				return nil, errors.New("RFC2136_TSIG_KEY and RFC2136_TSIG_SECRET must be set together")
			}
			cfg.TSIGAlgorithm = DefaultTSIGAlgorithm
			if a := v.get("RFC2136_TSIG_ALGORITHM"); a != "" {
				cfg.TSIGAlgorithm = a
			}
			cfg.DNSTimeout = v.seconds("RFC2136_DNS_TIMEOUT", 10*time.Second)
			cfg.Zones = v.list("RFC2136_ZONES")
			cfg.SequenceInterval = v.seconds("RFC2136_SEQUENCE_INTERVAL", 0)
			c.apply(&cfg.TTL, &cfg.PropagationTimeout, &cfg.PollingInterval)
			return rfc2136.NewDNSProviderConfig(cfg)
		},
	})
}
