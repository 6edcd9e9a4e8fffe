package providers

import (
	"errors"
	"strconv"

	"github.com/go-acme/lego/v4/challenge"
	"github.com/go-acme/lego/v4/providers/dns/route53"
)

func init() {
	register("route53", &provider{
		doc: "Amazon Route 53; without keys the AWS SDK's default chain (IRSA, EKS Pod Identity, instance role)",
		keys: []Key{
			{Name: "AWS_ACCESS_KEY_ID", Secret: true, Doc: "static access key (optional)"},
			{Name: "AWS_SECRET_ACCESS_KEY", Secret: true, Doc: "static secret key (with AWS_ACCESS_KEY_ID)"},
			{Name: "AWS_SESSION_TOKEN", Secret: true, Doc: "session token for temporary keys"},
			{Name: "AWS_REGION", Doc: "SDK region (Route 53 is global; any region works)"},
			{Name: "AWS_HOSTED_ZONE_ID", Doc: "hosted zone (default: found from the name)"},
			{Name: "AWS_ASSUME_ROLE_ARN", Doc: "role to assume for DNS changes"},
			{Name: "AWS_EXTERNAL_ID", Doc: "external ID for the assumed role"},
			{Name: "AWS_PRIVATE_ZONE", Doc: "true to use a private hosted zone"},
			{Name: "AWS_MAX_RETRIES", Doc: "API retries (default 5)"},
			{Name: "AWS_WAIT_FOR_RECORD_SETS_CHANGED", Doc: "wait for INSYNC after a change (default true)"},
		},
		build: func(v *values, c Common) (challenge.Provider, error) {
			cfg := route53.NewDefaultConfig()
			cfg.AccessKeyID = v.get("AWS_ACCESS_KEY_ID")
			cfg.SecretAccessKey = v.get("AWS_SECRET_ACCESS_KEY")
			cfg.SessionToken = v.get("AWS_SESSION_TOKEN")
			if (cfg.AccessKeyID == "") != (cfg.SecretAccessKey == "") {
				return nil, errors.New("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set together (or neither, for the SDK's default chain)")
			}
			cfg.Region = v.get("AWS_REGION")
			cfg.HostedZoneID = v.get("AWS_HOSTED_ZONE_ID")
			cfg.AssumeRoleArn = v.get("AWS_ASSUME_ROLE_ARN")
			cfg.ExternalID = v.get("AWS_EXTERNAL_ID")
			cfg.PrivateZone = v.boolean("AWS_PRIVATE_ZONE")
			if s := v.get("AWS_MAX_RETRIES"); s != "" {
				n, err := strconv.Atoi(s)
				if err != nil || n < 0 {
					return nil, errors.New("AWS_MAX_RETRIES: not a count")
				}
				cfg.MaxRetries = n
			}
			if v.get("AWS_WAIT_FOR_RECORD_SETS_CHANGED") != "" {
				cfg.WaitForRecordSetsChanged = v.boolean("AWS_WAIT_FOR_RECORD_SETS_CHANGED")
			}
			c.apply(&cfg.TTL, &cfg.PropagationTimeout, &cfg.PollingInterval)
			return route53.NewDNSProviderConfig(cfg)
		},
	})
}
