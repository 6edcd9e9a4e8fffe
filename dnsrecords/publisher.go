package dnsrecords

import (
	"context"
	"fmt"
	"log/slog"
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
	EventPublished = "DNSRecordsPublished"
	EventConflict  = "DNSRecordsConflict"
	EventError     = "DNSRecordsFailed"
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
	err := p.sync(ctx)
	if err != nil {
		syncs.WithLabelValues("error").Inc()
	}
	return err
}

func (p *Publisher) sync(ctx context.Context) error {
	s, on, err := p.Settings(ctx)
	if err != nil {
		p.reportAllAnnotated(ctx, err.Error())
		return err
	}
	if !on {
		return nil
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

// reportAllAnnotated tells every annotated Service that the settings
// failed (e.g. the credentials Secret is missing).
func (p *Publisher) reportAllAnnotated(ctx context.Context, msg string) {
	var svcs corev1.ServiceList
	if p.Client.List(ctx, &svcs) != nil {
		return
	}
	var annotated []corev1.Service
	for _, svc := range svcs.Items {
		if _, ok := svc.Annotations[contract.DNSRecords]; ok {
			annotated = append(annotated, svc)
		}
	}
	p.reportAll(annotated, corev1.EventTypeWarning, EventError, msg)
}

func (p *Publisher) reportAll(svcs []corev1.Service, typ, reason, msg string) {
	for i := range svcs {
		p.report(&svcs[i], typ, reason, msg)
	}
}
