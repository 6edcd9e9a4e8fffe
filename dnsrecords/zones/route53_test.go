package zones

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/route53"
	"github.com/aws/aws-sdk-go-v2/service/route53/types"

	"github.com/podtls/podtls/dnsrecords"
)

// fakeRoute53 keeps RRsets the way Route 53 does: names with a trailing
// dot and '*' escaped, listed two per page, batches applied whole
// (CREATE of an existing set or DELETE of a missing one fails the batch).
type fakeRoute53 struct {
	sets    []types.ResourceRecordSet
	batches int
}

func (f *fakeRoute53) ListHostedZonesByName(_ context.Context, in *route53.ListHostedZonesByNameInput, _ ...func(*route53.Options)) (*route53.ListHostedZonesByNameOutput, error) {
	return &route53.ListHostedZonesByNameOutput{HostedZones: []types.HostedZone{
		{Id: aws.String("/hostedzone/ZPRIV"), Name: aws.String("example.com."), Config: &types.HostedZoneConfig{PrivateZone: true}},
		{Id: aws.String("/hostedzone/ZPUB"), Name: aws.String("example.com."), Config: &types.HostedZoneConfig{}},
	}}, nil
}

func (f *fakeRoute53) ListResourceRecordSets(_ context.Context, in *route53.ListResourceRecordSetsInput, _ ...func(*route53.Options)) (*route53.ListResourceRecordSetsOutput, error) {
	if aws.ToString(in.HostedZoneId) != "ZPUB" {
		return nil, fmt.Errorf("NoSuchHostedZone %s", aws.ToString(in.HostedZoneId))
	}
	start := 0
	if in.StartRecordName != nil {
		start = slices.IndexFunc(f.sets, func(s types.ResourceRecordSet) bool {
			return aws.ToString(s.Name) == aws.ToString(in.StartRecordName) && s.Type == in.StartRecordType
		})
	}
	end := min(start+2, len(f.sets))
	out := &route53.ListResourceRecordSetsOutput{ResourceRecordSets: f.sets[start:end]}
	if end < len(f.sets) {
		out.IsTruncated, out.NextRecordName, out.NextRecordType = true, f.sets[end].Name, f.sets[end].Type
	}
	return out, nil
}

func (f *fakeRoute53) ChangeResourceRecordSets(_ context.Context, in *route53.ChangeResourceRecordSetsInput, _ ...func(*route53.Options)) (*route53.ChangeResourceRecordSetsOutput, error) {
	sets := slices.Clone(f.sets)
	for _, c := range in.ChangeBatch.Changes {
		rs := *c.ResourceRecordSet
		rs.Name = aws.String(strings.ReplaceAll(aws.ToString(rs.Name), "*", `\052`))
		i := slices.IndexFunc(sets, func(s types.ResourceRecordSet) bool {
			return aws.ToString(s.Name) == aws.ToString(rs.Name) && s.Type == rs.Type
		})
		switch {
		case c.Action == types.ChangeActionCreate && i >= 0:
			return nil, fmt.Errorf("InvalidChangeBatch: %s exists", aws.ToString(rs.Name))
		case c.Action == types.ChangeActionDelete && i < 0:
			return nil, fmt.Errorf("InvalidChangeBatch: %s not found", aws.ToString(rs.Name))
		case c.Action == types.ChangeActionDelete:
			sets = slices.Delete(sets, i, i+1)
		case i >= 0:
			sets[i] = rs
		default:
			sets = append(sets, rs)
		}
	}
	f.sets = sets
	f.batches++
	return &route53.ChangeResourceRecordSetsOutput{}, nil
}

func TestRoute53(t *testing.T) {
	f := &fakeRoute53{sets: []types.ResourceRecordSet{
		{Name: aws.String("example.com."), Type: types.RRTypeSoa, TTL: aws.Int64(900), ResourceRecords: []types.ResourceRecord{{Value: aws.String("ns. admin. 1 2 3 4 5")}}},
		{Name: aws.String(`\052.example.com.`), Type: types.RRTypeCname, TTL: aws.Int64(60), ResourceRecords: []types.ResourceRecord{{Value: aws.String("lb.example.net.")}}},
		{Name: aws.String("apex.example.com."), Type: types.RRTypeA, AliasTarget: &types.AliasTarget{DNSName: aws.String("d123.cloudfront.net.")}},
	}}
	z := &route53Zone{api: f, zone: "example.com"}
	foreign := dnsrecords.Record{Name: "*.example.com", Type: "CNAME", TTL: 60, Targets: []string{"lb.example.net"}}
	got, err := z.Records(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if g := sortedStrings(got); !slices.Equal(g, []string{"*.example.com 60 CNAME lb.example.net", "apex.example.com 0 A alias:d123.cloudfront.net"}) {
		t.Fatalf("listed %q", g)
	}
	f.sets = f.sets[:2] // the alias is shown as taken above; the lifecycle wants only the CNAME
	lifecycle(t, z, foreign)
	if z.id != "ZPUB" {
		t.Fatalf("hosted zone %q, want the public one", z.id)
	}
	if f.batches != 3 {
		t.Fatalf("%d batches, want one per change", f.batches)
	}
}

func TestRoute53SplitsLargeBatches(t *testing.T) {
	f := &fakeRoute53{}
	z := &route53Zone{api: f, zone: "example.com", id: "ZPUB"}
	var ch dnsrecords.Changes
	for i := range route53MaxChanges + 1 {
		ch.Create = append(ch.Create, dnsrecords.Record{Name: fmt.Sprintf("h%d.example.com", i), Type: "A", TTL: 60, Targets: []string{"192.0.2.1"}})
	}
	if err := z.Apply(context.Background(), ch); err != nil {
		t.Fatal(err)
	}
	if f.batches != 2 || len(f.sets) != route53MaxChanges+1 {
		t.Fatalf("%d batches, %d sets", f.batches, len(f.sets))
	}
}
