package dnsrecords

import (
	"slices"
	"strings"
	"time"
)

// Desired is an RRset podtls wants, for a resource ("service/NS/NAME").
type Desired struct {
	Record
	Resource string
}

// Conflict is a name podtls wants but leaves alone.
type Conflict struct {
	Key Key
	// Owner is who owns the RRset ("" when nobody does: a record someone
	// made by hand), or, for two resources claiming one name, "podtls".
	Owner    string
	Resource string // the resource whose wish was not granted
	Reason   string
}

// Changes are what to send to the zone. Updates replace an RRset whole.
type Changes struct {
	Create, Update, Delete []Record
}

// Empty reports whether there is nothing to change.
func (c Changes) Empty() bool { return len(c.Create)+len(c.Update)+len(c.Delete) == 0 }

// Options of Compute.
type Options struct {
	// Owner is podtls's owner ID in the TXT records (one per cluster).
	Owner string
	// Grace is how long a record nothing asks for any more stays.
	Grace time.Duration
	Now   time.Time
}

// Compute plans the changes that make the zone (current: every RRset of it)
// hold desired, touching only RRsets podtls owns. unused holds, per owned
// key nothing asks for any more, since when; Compute returns it updated
// (the caller keeps it across passes; a restart starts the grace anew).
func Compute(desired []Desired, current []Record, unused map[Key]time.Time, o Options) (Changes, []Conflict, map[Key]time.Time) {
	cur := map[Key]Record{}
	for _, r := range current {
		r = r.Normalize()
		cur[r.Key()] = r
	}
	owners := map[Key]struct{ owner, resource string }{}
	for k, r := range cur {
		if k.Type != TypeTXT {
			continue
		}
		for _, t := range r.Targets {
			if owner, res, ok := ParseOwnerText(t); ok {
				owners[k] = struct{ owner, resource string }{owner, res}
			}
		}
	}
	var ch Changes
	var conflicts []Conflict
	next := map[Key]time.Time{}
	wanted := map[Key]bool{}

	slices.SortFunc(desired, func(a, b Desired) int {
		if c := strings.Compare(a.Name+"/"+a.Type, b.Name+"/"+b.Type); c != 0 {
			return c
		}
		return strings.Compare(a.Resource, b.Resource)
	})
	for _, d := range desired {
		d.Record = d.Record.Normalize()
		k := d.Key()
		if wanted[k] {
			conflicts = append(conflicts, Conflict{Key: k, Owner: "podtls", Resource: d.Resource, Reason: "another resource claims this name first"})
			continue
		}
		ok := Key{OwnerName(k.Name, k.Type), TypeTXT}
		own, hasOwner := owners[ok]
		existing, exists := cur[k]
		switch {
		case hasOwner && own.owner != o.Owner:
			conflicts = append(conflicts, Conflict{Key: k, Owner: own.owner, Resource: d.Resource, Reason: "owned by " + own.owner})
			continue
		case !hasOwner && exists:
			conflicts = append(conflicts, Conflict{Key: k, Resource: d.Resource, Reason: "a record nobody owns exists; podtls never changes it"})
			continue
		case !hasOwner && clashes(cur, owners, o.Owner, k):
			conflicts = append(conflicts, Conflict{Key: k, Resource: d.Resource, Reason: "the name holds a record of another type (CNAME cannot share a name)"})
			continue
		}
		wanted[k] = true
		txt := Record{Name: ok.Name, Type: TypeTXT, Targets: []string{OwnerText(o.Owner, d.Resource)}, TTL: d.TTL}
		switch {
		case !hasOwner:
			ch.Create = append(ch.Create, d.Record, txt)
		case !exists:
			ch.Create = append(ch.Create, d.Record)
			if own.resource != d.Resource {
				ch.Update = append(ch.Update, txt)
			}
		default:
			if !sameData(existing, d.Record) {
				ch.Update = append(ch.Update, d.Record)
			}
			if own.resource != d.Resource {
				ch.Update = append(ch.Update, txt)
			}
		}
	}

	// Owned RRsets nothing wants: deleted after the grace period, the
	// ownership TXT with them.
	for ok, own := range owners {
		if own.owner != o.Owner {
			continue
		}
		k, ok2 := ownedKey(ok.Name)
		if !ok2 || wanted[k] {
			continue
		}
		since, seen := unused[k]
		if !seen {
			since = o.Now
		}
		if o.Now.Sub(since) < o.Grace {
			next[k] = since
			continue
		}
		if r, exists := cur[k]; exists {
			ch.Delete = append(ch.Delete, r)
		}
		ch.Delete = append(ch.Delete, cur[ok])
	}
	sortRecords(ch.Create)
	sortRecords(ch.Update)
	sortRecords(ch.Delete)
	return ch, conflicts, next
}

// clashes reports whether k cannot be created next to what the name holds:
// a CNAME beside anything, or anything beside a CNAME, that podtls does not own.
func clashes(cur map[Key]Record, owners map[Key]struct{ owner, resource string }, owner string, k Key) bool {
	for ck := range cur {
		if ck.Name != k.Name || ck.Type == TypeTXT || ck.Type == k.Type {
			continue
		}
		if k.Type != TypeCNAME && ck.Type != TypeCNAME {
			continue
		}
		if o, ok := owners[Key{OwnerName(ck.Name, ck.Type), TypeTXT}]; ok && o.owner == owner {
			continue // ours: replaced when it is no longer wanted
		}
		return true
	}
	return false
}

// ownedKey turns an owner TXT name back into the key it owns.
func ownedKey(txtName string) (Key, bool) {
	first, rest, hasRest := strings.Cut(txtName, ".")
	typ, label, found := strings.Cut(first, "-")
	if !found {
		return Key{}, false
	}
	typ = strings.ToUpper(typ)
	if typ != TypeA && typ != TypeAAAA && typ != TypeCNAME {
		return Key{}, false
	}
	name := label
	if hasRest {
		name += "." + rest
	}
	return Key{name, typ}, true
}

func sortRecords(rs []Record) {
	slices.SortFunc(rs, func(a, b Record) int { return strings.Compare(a.Name+"/"+a.Type, b.Name+"/"+b.Type) })
}
