package contract

import (
	"encoding/json"
	"fmt"
	"time"
)

// DNSRecordsStatus is written by the controller on Services annotated with
// DNSRecords: a JSON DNSRecordState, what their records are in the zone.
const DNSRecordsStatus = Prefix + "dns-records-status"

// States of a Service's records, and the Events that report a change to one.
const (
	DNSRecordsPublished = "published" // every record asked for is in the zone
	DNSRecordsConflict  = "conflict"  // some name is someone else's, outside the zone or not allowed
	DNSRecordsError     = "error"     // the zone could not be read or changed
	DNSRecordsPending   = "pending"   // nothing to publish yet (no hosts, no address)

	EventDNSRecordsPublished = "DNSRecordsPublished"
	EventDNSRecordsConflict  = "DNSRecordsConflict"
	EventDNSRecordsFailed    = "DNSRecordsFailed"
)

// DNSRecordState is the value of DNSRecordsStatus.
type DNSRecordState struct {
	State string `json:"state"`
	// Records are the RRsets podtls holds for the Service, each as
	// "NAME TTL TYPE TARGET[,TARGET...]", sorted.
	Records []string `json:"records,omitempty"`
	// Message explains a conflict or an error.
	Message string    `json:"message,omitempty"`
	Since   time.Time `json:"since"` // when the state last changed
	Zone    string    `json:"zone,omitempty"`
}

// Encode renders the annotation value.
func (s DNSRecordState) Encode() string {
	b, _ := json.Marshal(s) // strings and a time: cannot fail
	return string(b)
}

// DecodeDNSRecordState parses the annotation value.
func DecodeDNSRecordState(v string) (DNSRecordState, error) {
	var s DNSRecordState
	if err := json.Unmarshal([]byte(v), &s); err != nil {
		return DNSRecordState{}, fmt.Errorf("annotation %s: %w", DNSRecordsStatus, err)
	}
	switch s.State {
	case DNSRecordsPublished, DNSRecordsConflict, DNSRecordsError, DNSRecordsPending:
	default:
		return DNSRecordState{}, fmt.Errorf("annotation %s: unknown state %q", DNSRecordsStatus, s.State)
	}
	return s, nil
}
