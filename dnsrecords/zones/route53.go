package zones

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	"github.com/aws/aws-sdk-go-v2/service/route53"
	"github.com/aws/aws-sdk-go-v2/service/route53/types"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/podtls/podtls/dnsrecords"
)

// route53API is the part of the Route 53 client the zone uses.
type route53API interface {
	ListHostedZonesByName(ctx context.Context, in *route53.ListHostedZonesByNameInput, opts ...func(*route53.Options)) (*route53.ListHostedZonesByNameOutput, error)
	ListResourceRecordSets(ctx context.Context, in *route53.ListResourceRecordSetsInput, opts ...func(*route53.Options)) (*route53.ListResourceRecordSetsOutput, error)
	ChangeResourceRecordSets(ctx context.Context, in *route53.ChangeResourceRecordSetsInput, opts ...func(*route53.Options)) (*route53.ChangeResourceRecordSetsOutput, error)
}

// route53Zone is a hosted zone of Amazon Route 53.
type route53Zone struct {
	api     route53API
	zone    string // without trailing dot
	id      string // hosted zone ID; found on first use when empty
	private bool
}

// route53MaxChanges is Route 53's limit of changes in one batch.
const route53MaxChanges = 1000

func newRoute53(ctx context.Context, zone string, v map[string]string) (dnsrecords.Zone, error) {
	region := v["AWS_REGION"]
	if region == "" {
		region = "us-east-1" // Route 53 is global; the SDK needs some region
	}
	opts := []func(*awsconfig.LoadOptions) error{awsconfig.WithRegion(region)}
	if id, secret := v["AWS_ACCESS_KEY_ID"], v["AWS_SECRET_ACCESS_KEY"]; id != "" || secret != "" {
		if id == "" || secret == "" {
			return nil, errors.New("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set together (or neither, for the SDK's default chain)")
		}
		opts = append(opts, awsconfig.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(id, secret, v["AWS_SESSION_TOKEN"])))
	}
	if s := v["AWS_MAX_RETRIES"]; s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return nil, errors.New("AWS_MAX_RETRIES: not a count")
		}
		opts = append(opts, awsconfig.WithRetryMaxAttempts(n+1))
	}
	cfg, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("AWS configuration: %w", err)
	}
	if arn := v["AWS_ASSUME_ROLE_ARN"]; arn != "" {
		cfg.Credentials = aws.NewCredentialsCache(stscreds.NewAssumeRoleProvider(sts.NewFromConfig(cfg), arn, func(o *stscreds.AssumeRoleOptions) {
			if ext := v["AWS_EXTERNAL_ID"]; ext != "" {
				o.ExternalID = aws.String(ext)
			}
		}))
	}
	private, _ := strconv.ParseBool(v["AWS_PRIVATE_ZONE"])
	return &route53Zone{api: route53.NewFromConfig(cfg), zone: zone, id: strings.TrimPrefix(v["AWS_HOSTED_ZONE_ID"], "/hostedzone/"), private: private}, nil
}

// hostedZone finds the zone's ID by its name (public, or private when
// asked), once.
func (z *route53Zone) hostedZone(ctx context.Context) (string, error) {
	if z.id != "" {
		return z.id, nil
	}
	out, err := z.api.ListHostedZonesByName(ctx, &route53.ListHostedZonesByNameInput{DNSName: aws.String(fqdn(z.zone))})
	if err != nil {
		return "", fmt.Errorf("find hosted zone %s: %w", z.zone, err)
	}
	for _, hz := range out.HostedZones {
		priv := hz.Config != nil && hz.Config.PrivateZone
		if strings.EqualFold(aws.ToString(hz.Name), fqdn(z.zone)) && priv == z.private {
			z.id = strings.TrimPrefix(aws.ToString(hz.Id), "/hostedzone/")
			return z.id, nil
		}
	}
	kind := "public"
	if z.private {
		kind = "private"
	}
	return "", fmt.Errorf("no %s hosted zone named %s (set AWS_HOSTED_ZONE_ID to choose one)", kind, z.zone)
}

// Records lists the zone's A, AAAA, CNAME and TXT RRsets. Weighted,
// latency and other routed sets (SetIdentifier) and alias records are
// returned with their data marked, so podtls sees them as taken.
func (z *route53Zone) Records(ctx context.Context) ([]dnsrecords.Record, error) {
	id, err := z.hostedZone(ctx)
	if err != nil {
		return nil, err
	}
	in := &route53.ListResourceRecordSetsInput{HostedZoneId: aws.String(id)}
	var out []dnsrecords.Record
	for {
		page, err := z.api.ListResourceRecordSets(ctx, in)
		if err != nil {
			return nil, fmt.Errorf("list records of %s (%s): %w", z.zone, id, err)
		}
		for _, rs := range page.ResourceRecordSets {
			if r, ok := fromRoute53(rs); ok {
				out = append(out, r)
			}
		}
		if !page.IsTruncated {
			return out, nil
		}
		in.StartRecordName, in.StartRecordType, in.StartRecordIdentifier = page.NextRecordName, page.NextRecordType, page.NextRecordIdentifier
	}
}

func fromRoute53(rs types.ResourceRecordSet) (dnsrecords.Record, bool) {
	t := string(rs.Type)
	if !published(t) {
		return dnsrecords.Record{}, false
	}
	r := dnsrecords.Record{Name: unescapeRoute53(aws.ToString(rs.Name)), Type: t, TTL: aws.ToInt64(rs.TTL)}
	for _, rr := range rs.ResourceRecords {
		r.Targets = append(r.Targets, aws.ToString(rr.Value))
	}
	if rs.AliasTarget != nil {
		r.Targets = append(r.Targets, "alias:"+strings.TrimSuffix(aws.ToString(rs.AliasTarget.DNSName), "."))
	}
	if rs.SetIdentifier != nil {
		r.Targets = append(r.Targets, "set:"+aws.ToString(rs.SetIdentifier))
	}
	return r.Normalize(), true
}

// unescapeRoute53 turns Route 53's octal escapes ("\052" for '*') back
// into characters.
func unescapeRoute53(name string) string {
	var b strings.Builder
	for i := 0; i < len(name); i++ {
		if name[i] == '\\' && i+3 < len(name) {
			if n, err := strconv.ParseUint(name[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(name[i])
	}
	return strings.TrimSuffix(strings.ToLower(b.String()), ".")
}

// Apply sends the changes in one batch (Route 53 applies a batch whole),
// or in batches of at most 1000 changes when there are more.
func (z *route53Zone) Apply(ctx context.Context, ch dnsrecords.Changes) error {
	if ch.Empty() {
		return nil
	}
	id, err := z.hostedZone(ctx)
	if err != nil {
		return err
	}
	var changes []types.Change
	for _, c := range []struct {
		action  types.ChangeAction
		records []dnsrecords.Record
	}{{types.ChangeActionDelete, ch.Delete}, {types.ChangeActionUpsert, ch.Update}, {types.ChangeActionCreate, ch.Create}} {
		for _, r := range c.records {
			if !inZone(r.Name, z.zone) {
				return fmt.Errorf("record %s is outside the zone %s", r.Name, z.zone)
			}
			changes = append(changes, types.Change{Action: c.action, ResourceRecordSet: toRoute53(r)})
		}
	}
	for len(changes) > 0 {
		n := min(len(changes), route53MaxChanges)
		_, err := z.api.ChangeResourceRecordSets(ctx, &route53.ChangeResourceRecordSetsInput{
			HostedZoneId: aws.String(id),
			ChangeBatch:  &types.ChangeBatch{Comment: aws.String("podtls DNS records"), Changes: changes[:n]},
		})
		if err != nil {
			return fmt.Errorf("change records of %s (%s): %w", z.zone, id, err)
		}
		changes = changes[n:]
	}
	return nil
}

func toRoute53(r dnsrecords.Record) *types.ResourceRecordSet {
	rs := &types.ResourceRecordSet{Name: aws.String(fqdn(r.Name)), Type: types.RRType(r.Type), TTL: aws.Int64(r.TTL)}
	for _, t := range r.Targets {
		if r.Type == dnsrecords.TypeCNAME {
			t = fqdn(t)
		}
		rs.ResourceRecords = append(rs.ResourceRecords, types.ResourceRecord{Value: aws.String(t)})
	}
	return rs
}
