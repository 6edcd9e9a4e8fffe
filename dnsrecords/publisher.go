package dnsrecords

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/record"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

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
	EventPublished = contract.EventDNSRecordsPublished
	EventConflict  = contract.EventDNSRecordsConflict
	EventError     = contract.EventDNSRecordsFailed
)

var (
	syncs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "podtls_dns_records_syncs_total",
		Help: "Passes comparing the zone with the annotated Services, by result (ok, error).",
	}, []string{"result"})
	changes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "podtls_dns_record_changes_total",
		Help: "RRsets created, updated and deleted in the zone (ownership TXT records included), by operation.",
	}, []string{"op"})
	states = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "podtls_dns_records",
		Help: "RRsets the annotated Services ask for, after the last successful pass, by state (published, conflict).",
	}, []string{"state"})
	lastSuccess = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "podtls_dns_records_last_success_timestamp_seconds",
		Help: "When the zone last matched the annotated Services (Unix time).",
	})
)

func init() { metrics.Registry.MustRegister(syncs, changes, states, lastSuccess) }

// Publisher makes the zone hold what the annotated Services ask for, on
// every Sync. Only the leader runs it. It keeps the grace-period clock of
// records nothing asks for; a new leader starts that clock anew.
type Publisher struct {
	Client   client.Client // cached Services, Pods, Nodes; patches Services' status annotation
	Recorder record.EventRecorder
	// Settings returns the current settings; false: records are off. An
	// error (credentials unreadable) fails the pass.
	Settings func(ctx context.Context) (Settings, bool, error)
	Logger   *slog.Logger
	Now      func() time.Time

	mu     sync.Mutex
	grace  time.Duration
	unused map[Key]time.Time
	last   map[string]string // Service -> last reported state, so Events are not repeated
}

// Sync runs one pass; the error is the zone's (the caller backs off).
func (p *Publisher) Sync(ctx context.Context) error {
	err := p.sync(ctx)
	if err != nil {
		syncs.WithLabelValues("error").Inc()
	}
	return err
}

func (p *Publisher) sync(ctx context.Context) error {
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
	s, on, err := p.Settings(ctx)
	if err != nil {
		p.failAll(ctx, annotated, "", err.Error(), now())
		return err
	}
	if !on {
		return nil
	}
	wanted, problems := Wanted(Inputs{Services: annotated, Pods: pods.Items, Nodes: nodes.Items, Zone: s.Name, TTL: s.TTL, Allowed: s.Allowed})
	current, err := s.Zone.Records(ctx)
	if err != nil {
		p.failAll(ctx, annotated, s.Name, "cannot read zone "+s.Name+": "+err.Error(), now())
		return err
	}
	p.mu.Lock()
	ch, conflicts, next := Compute(wanted, current, p.unused, Options{Owner: s.Owner, Grace: s.Grace, Now: now()})
	p.unused, p.grace = next, s.Grace
	p.mu.Unlock()
	if err := s.Zone.Apply(ctx, ch); err != nil {
		p.failAll(ctx, annotated, s.Name, "cannot update zone "+s.Name+": "+err.Error(), now())
		return err
	}
	byService := map[string][]string{}
	for _, pr := range problems {
		byService[pr.Service] = append(byService[pr.Service], pr.Message)
	}
	refused := map[Key]bool{}
	for _, c := range conflicts {
		svc := strings.TrimPrefix(c.Resource, "service/")
		byService[svc] = append(byService[svc], fmt.Sprintf("%s %s: %s", c.Key.Name, c.Key.Type, c.Reason))
		refused[c.Key] = true
	}
	published := map[string][]string{}
	for _, d := range wanted {
		if refused[d.Key()] {
			continue
		}
		svc := strings.TrimPrefix(d.Resource, "service/")
		published[svc] = append(published[svc], d.Record.Normalize().String())
	}
	for i := range annotated {
		svc := &annotated[i]
		id := svc.Namespace + "/" + svc.Name
		st := contract.DNSRecordState{State: contract.DNSRecordsPublished, Records: published[id], Zone: s.Name}
		slices.Sort(st.Records)
		switch {
		case len(byService[id]) > 0:
			st.State, st.Message = contract.DNSRecordsConflict, strings.Join(byService[id], "; ")
		case len(published[id]) == 0:
			st.State, st.Message = contract.DNSRecordsPending, "nothing to publish yet: no pod with external hosts, or no load balancer address"
		}
		p.setState(ctx, svc, st, now())
	}
	syncs.WithLabelValues("ok").Inc()
	changes.WithLabelValues("create").Add(float64(len(ch.Create)))
	changes.WithLabelValues("update").Add(float64(len(ch.Update)))
	changes.WithLabelValues("delete").Add(float64(len(ch.Delete)))
	states.WithLabelValues("published").Set(float64(len(wanted) - len(conflicts)))
	states.WithLabelValues("conflict").Set(float64(len(conflicts) + len(problems)))
	lastSuccess.Set(float64(now().Unix()))
	if !ch.Empty() && p.Logger != nil {
		p.Logger.Info("dns records changed", "zone", s.Name, "created", len(ch.Create), "updated", len(ch.Update), "deleted", len(ch.Delete))
	}
	return nil
}

// NextExpiry is when the first record nothing asks for any more reaches
// the end of its grace period (false: none waits), so the caller can run
// a pass then rather than at the next resync.
func (p *Publisher) NextExpiry() (time.Time, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var first time.Time
	for _, since := range p.unused {
		if t := since.Add(p.grace); first.IsZero() || t.Before(first) {
			first = t
		}
	}
	return first, !first.IsZero()
}

// setState writes the Service's records state into its status annotation
// and records an Event, when the state changed (the annotation is the
// memory, so a new leader does not repeat Events). Without the right to
// annotate, the Event alone is recorded, once per state.
func (p *Publisher) setState(ctx context.Context, svc *corev1.Service, st contract.DNSRecordState, now time.Time) {
	id := svc.Namespace + "/" + svc.Name
	key := st.State + "\x00" + strings.Join(st.Records, ",") + "\x00" + st.Message
	if old, err := contract.DecodeDNSRecordState(svc.Annotations[contract.DNSRecordsStatus]); err == nil &&
		old.State+"\x00"+strings.Join(old.Records, ",")+"\x00"+old.Message == key {
		return
	}
	p.mu.Lock()
	if p.last == nil {
		p.last = map[string]string{}
	}
	repeated := p.last[id] == key
	p.last[id] = key
	p.mu.Unlock()
	st.Since = now.UTC().Truncate(time.Second)
	before := svc.DeepCopy()
	if svc.Annotations == nil {
		svc.Annotations = map[string]string{}
	}
	svc.Annotations[contract.DNSRecordsStatus] = st.Encode()
	if err := p.Client.Patch(ctx, svc, client.MergeFrom(before)); err != nil && p.Logger != nil {
		p.Logger.Warn("cannot write the records status", "service", id, "err", err)
	}
	if repeated || p.Recorder == nil {
		return
	}
	switch st.State {
	case contract.DNSRecordsPublished:
		p.Recorder.Event(svc, corev1.EventTypeNormal, EventPublished, strings.Join(st.Records, "; "))
	case contract.DNSRecordsConflict:
		p.Recorder.Event(svc, corev1.EventTypeWarning, EventConflict, st.Message)
	case contract.DNSRecordsError:
		p.Recorder.Event(svc, corev1.EventTypeWarning, EventError, st.Message)
	}
}

// failAll marks every annotated Service as failed with msg.
func (p *Publisher) failAll(ctx context.Context, svcs []corev1.Service, zone, msg string, now time.Time) {
	for i := range svcs {
		old, err := contract.DecodeDNSRecordState(svcs[i].Annotations[contract.DNSRecordsStatus])
		st := contract.DNSRecordState{State: contract.DNSRecordsError, Message: msg, Zone: zone}
		if err == nil {
			st.Records = old.Records // what was published last, probably still there
		}
		p.setState(ctx, &svcs[i], st, now)
	}
}
