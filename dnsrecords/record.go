// Package dnsrecords is the pure core of publishing address records for the
// external hosts of exposed pods (issue 19, work in progress: not wired into
// the controller yet). It decides, from the records podtls wants and the
// records a zone holds, what to create, update and delete, and it owns
// records the way external-dns's TXT registry does, in the same format, so
// both can share a zone without touching each other's names.
package dnsrecords

import (
	"fmt"
	"slices"
	"strings"
)

// Record types podtls publishes (plus TXT for ownership).
const (
	TypeA     = "A"
	TypeAAAA  = "AAAA"
	TypeCNAME = "CNAME"
	TypeTXT   = "TXT"
)

// Record is one RRset: a name, a type, its targets and TTL.
type Record struct {
	Name    string   // fully qualified, lower case, without the trailing dot
	Type    string   // TypeA, TypeAAAA, TypeCNAME, TypeTXT
	Targets []string // sorted, unique
	TTL     int64    // seconds
}

// Key identifies an RRset.
type Key struct{ Name, Type string }

// Key returns the record's RRset key.
func (r Record) Key() Key { return Key{r.Name, r.Type} }

func (r Record) String() string {
	return fmt.Sprintf("%s %d %s %s", r.Name, r.TTL, r.Type, strings.Join(r.Targets, ","))
}

// Normalize lower-cases names, strips trailing dots and sorts targets.
func (r Record) Normalize() Record {
	r.Name = strings.TrimSuffix(strings.ToLower(r.Name), ".")
	t := make([]string, 0, len(r.Targets))
	for _, x := range r.Targets {
		if r.Type == TypeCNAME {
			x = strings.TrimSuffix(strings.ToLower(x), ".")
		}
		if !slices.Contains(t, x) {
			t = append(t, x)
		}
	}
	slices.Sort(t)
	r.Targets = t
	return r
}

// sameData reports whether two RRsets hold the same targets and TTL.
func sameData(a, b Record) bool {
	return a.TTL == b.TTL && slices.Equal(a.Targets, b.Targets)
}
