package dnsrecords

import (
	"sort"
	"strconv"
	"strings"
)

// Ownership is external-dns's TXT registry format (registry/txt with the
// default name mapper): for an RRset NAME of type T the owner record is a
// TXT at "<t>-<first label>.<rest>" holding
// "heritage=external-dns,external-dns/owner=OWNER,external-dns/resource=RES".
// podtls writes the same format with its own owner ID, so external-dns
// sees podtls's names as owned by someone else, and the other way round.
const (
	heritage    = "external-dns"
	labelOwner  = "owner"
	labelSource = "resource"
)

// OwnerName is the name of the TXT record that owns the RRset name/type.
func OwnerName(name, typ string) string {
	first, rest, hasRest := strings.Cut(name, ".")
	out := strings.ToLower(typ) + "-" + first
	if hasRest {
		out += "." + rest
	}
	return out
}

// OwnerText is the TXT content stating that owner made the RRset for
// resource (e.g. "service/shop/web").
func OwnerText(owner, resource string) string {
	labels := map[string]string{labelOwner: owner}
	if resource != "" {
		labels[labelSource] = resource
	}
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := []string{"heritage=" + heritage}
	for _, k := range keys {
		parts = append(parts, heritage+"/"+k+"="+labels[k])
	}
	return strconv.Quote(strings.Join(parts, ","))
}

// ParseOwnerText reads a TXT content written by OwnerText (or by
// external-dns, quoted or not). ok is false for anything else: a TXT that
// is not an ownership record.
func ParseOwnerText(txt string) (owner, resource string, ok bool) {
	if u, err := strconv.Unquote(txt); err == nil {
		txt = u
	}
	if !strings.HasPrefix(txt, "heritage=") {
		return "", "", false
	}
	for _, kv := range strings.Split(txt, ",") {
		k, v, found := strings.Cut(kv, "=")
		if !found {
			return "", "", false
		}
		switch k {
		case "heritage":
			if v != heritage {
				return "", "", false
			}
		case heritage + "/" + labelOwner:
			owner = v
		case heritage + "/" + labelSource:
			resource = v
		}
	}
	return owner, resource, owner != ""
}
