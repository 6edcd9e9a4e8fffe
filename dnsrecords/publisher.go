package dnsrecords

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/record"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/podtls/podtls/contract"
)

// Zone is a DNS zone podtls manages records in (RFC2136, and the other
// providers to come).
type Zone interface {
	Records(ctx context.Context) ([]Record, error)
	Apply(ctx context.Context, ch Changes) error
}

// Settings are the records part of the issuer configuration, resolved.
type Settings struct {
	Zone    Zone
	Name    string // the zone's name
	TTL     int64
	Owner   string
	Grace   time.Duration
	Allowed func(namespace, host string) bool
}

// Events on Services.
const (
	EventPublished = "DNSRecordsPublished"
	EventConflict  = "DNSRecordsConflict"
	EventError     = "DNSRecordsFailed"
)

// Publisher makes the zone hold what the annotated Services ask for, on
// every Sync. Only the leader runs it. It keeps the grace-period clock of
// records nothing asks for; a new leader starts that clock anew.
type Publisher struct {
	Client   client.Reader // cached Services, Pods, Nodes
	Recorder record.EventRecorder
	// Settings returns the current settings; false: records are off. An
	// error (credentials unreadable) fails the pass.
	Settings func(ctx context.Context) (Settings, bool, error)
	Logger   *slog.Logger
	Now      func() time.Time

	mu     sync.Mutex
	unused map[Key]time.Time
	last   map[string]string // Service -> last reported state, so Events are not repeated
}

// Sync runs one pass; the error is the zone's (the caller backs off).
func (p *Publisher) Sync(ctx context.Context) error {
	s, on, err := p.Settings(ctx)
	if err != nil || !on {
		return err
	}
	now := time.Now
	if p.Now != nil {
		now = p.Now
	}
	var svcs corev1.ServiceList
	var pods corev1.PodList
	var nodes corev1.NodeList
	for _, l := range []client.ObjectList{&svcs, &pods, &nodes} {
		if err := p.Client.List(ctx, l); err != nil {
			return fmt.Errorf("list: %w", err)
		}
	}
	var annotated []corev1.Service
	for _, svc := range svcs.Items {
		if _, ok := svc.Annotations[contract.DNSRecords]; ok {
			annotated = append(annotated, svc)
		}
	}
	wanted, problems := Wanted(Inputs{Services: annotated, Pods: pods.Items, Nodes: nodes.Items, Zone: s.Name, TTL: s.TTL, Allowed: s.Allowed})
	current, err := s.Zone.Records(ctx)
	if err != nil {
		p.reportAll(annotated, corev1.EventTypeWarning, EventError, "cannot read zone "+s.Name+": "+err.Error())
		return err
	}
	p.mu.Lock()
	ch, conflicts, next := Compute(wanted, current, p.unused, Options{Owner: s.Owner, Grace: s.Grace, Now: now()})
	p.unused = next
	p.mu.Unlock()
	if err := s.Zone.Apply(ctx, ch); err != nil {
		p.reportAll(annotated, corev1.EventTypeWarning, EventError, "cannot update zone "+s.Name+": "+err.Error())
		return err
	}
	byService := map[string][]string{}
	for _, pr := range problems {
		byService[pr.Service] = append(byService[pr.Service], pr.Message)
	}
	for _, c := range conflicts {
		svc := strings.TrimPrefix(c.Resource, "service/")
		byService[svc] = append(byService[svc], fmt.Sprintf("%s %s: %s", c.Key.Name, c.Key.Type, c.Reason))
	}
	published := map[string][]string{}
	for _, d := range wanted {
		svc := strings.TrimPrefix(d.Resource, "service/")
		published[svc] = append(published[svc], d.Record.Normalize().String())
	}
	for i := range annotated {
		svc := &annotated[i]
		id := svc.Namespace + "/" + svc.Name
		switch {
		case len(byService[id]) > 0:
			p.report(svc, corev1.EventTypeWarning, EventConflict, strings.Join(byService[id], "; "))
		case len(published[id]) > 0:
			p.report(svc, corev1.EventTypeNormal, EventPublished, strings.Join(published[id], "; "))
		}
	}
	if !ch.Empty() && p.Logger != nil {
		p.Logger.Info("dns records changed", "zone", s.Name, "created", len(ch.Create), "updated", len(ch.Update), "deleted", len(ch.Delete))
	}
	return nil
}

// report records an Event when the Service's state changed since the last one.
func (p *Publisher) report(svc *corev1.Service, typ, reason, msg string) {
	id := svc.Namespace + "/" + svc.Name
	p.mu.Lock()
	if p.last == nil {
		p.last = map[string]string{}
	}
	same := p.last[id] == reason+msg
	p.last[id] = reason + msg
	p.mu.Unlock()
	if !same && p.Recorder != nil {
		p.Recorder.Event(svc, typ, reason, msg)
	}
}

func (p *Publisher) reportAll(svcs []corev1.Service, typ, reason, msg string) {
	for i := range svcs {
		p.report(&svcs[i], typ, reason, msg)
	}
}
