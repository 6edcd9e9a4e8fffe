package reconciler

import (
	"crypto/x509"
	"fmt"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"

	"github.com/podtls/podtls/acme/status"
)

func TestAnnounce(t *testing.T) {
	issued := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	key := types.NamespacedName{Namespace: "demo", Name: "podtls-ext-0123456789abcdef"}
	ext := status.External{Hosts: []string{"shop.example.test"}, LastSuccess: issued}
	leaf := func(serial int64) *x509.Certificate {
		return &x509.Certificate{SerialNumber: big.NewInt(serial), NotAfter: issued.Add(90 * 24 * time.Hour)}
	}
	pod := func(name string, created time.Time) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: name, UID: types.UID("uid-" + name)}}
		if !created.IsZero() {
			p.CreationTimestamp = metav1.NewTime(created)
		}
		return p
	}
	newManager := func() (*Manager, *record.FakeRecorder) {
		m := New(Options{})
		rec := record.NewFakeRecorder(1000)
		m.recorder, m.log = rec, logr.Discard()
		return m, rec
	}
	told := func(rec *record.FakeRecorder) []string {
		var names []string
		for {
			select {
			case e := <-rec.Events:
				names = append(names, e)
			default:
				return names
			}
		}
	}
	older := pod("older", issued.Add(-time.Hour)) // present at issuance
	newer := pod("newer", issued.Add(time.Hour))  // a replica that joined later
	unknown := pod("unknown", time.Time{})        // no creation time: told
	same := pod("same-second", issued)            // created in the second of issuance: told

	t.Run("first look since start", func(t *testing.T) {
		m, rec := newManager()
		m.announce(key, []*corev1.Pod{older, newer, unknown, same}, leaf(0xabc), ext)
		evs := told(rec)
		if len(evs) != 3 {
			t.Fatalf("events %q, want 3 (not the pod present at issuance)", evs)
		}
		for _, e := range evs {
			if !strings.HasPrefix(e, "Normal "+status.EventIssued+" uses certificate serial abc of Secret "+key.Name+" for shop.example.test, valid until 2026-07-30T12:00:00Z") {
				t.Errorf("event %q", e)
			}
		}
		// A resync tells nobody again; a pod joining is told; a pod that
		// left is forgotten.
		m.announce(key, []*corev1.Pod{older, newer, unknown, same}, leaf(0xabc), ext)
		if evs := told(rec); len(evs) != 0 {
			t.Errorf("resync repeated %q", evs)
		}
		late := pod("late", issued.Add(2*time.Hour))
		m.announce(key, []*corev1.Pod{older, newer, late}, leaf(0xabc), ext)
		if evs := told(rec); len(evs) != 1 {
			t.Errorf("a joining pod: events %q, want 1", evs)
		}
		if _, ok := m.told[key][unknown.UID]; ok {
			t.Error("a pod that left is still remembered")
		}
		// After a renewal stored for some pods, only the others are told
		// about the new serial.
		m.announced(key, []*corev1.Pod{older, newer}, "def")
		m.announce(key, []*corev1.Pod{older, newer, late}, leaf(0xdef), ext)
		if evs := told(rec); len(evs) != 1 || !strings.Contains(evs[0], "serial def") {
			t.Errorf("after a renewal: events %q, want one for the late pod", evs)
		}
	})

	t.Run("issued by this process", func(t *testing.T) {
		m, rec := newManager()
		m.announced(key, []*corev1.Pod{older}, "abc")
		m.announce(key, []*corev1.Pod{older, newer}, leaf(0xabc), ext)
		if evs := told(rec); len(evs) != 1 {
			t.Errorf("events %q, want one for the pod that joined", evs)
		}
		// The first look rule does not apply once this process knows the
		// Secret: a pod created before issuance but not yet a user when
		// the certificate was stored (it joined during the order) is told.
		m.announce(key, []*corev1.Pod{older, newer, pod("during-order", issued.Add(-time.Second))}, leaf(0xabc), ext)
		if evs := told(rec); len(evs) != 1 {
			t.Errorf("events %q, want one for the pod created during the order", evs)
		}
	})

	t.Run("restart with many pods tells the newest few", func(t *testing.T) {
		m, rec := newManager()
		var pods []*corev1.Pod
		for i := range maxEventPods + 20 {
			pods = append(pods, pod(fmt.Sprintf("p%03d", i), issued.Add(time.Duration(i+1)*time.Minute)))
		}
		names := &nameRecorder{EventRecorder: rec}
		m.recorder = names
		m.announce(key, pods, leaf(0xabc), ext)
		if evs := told(rec); len(evs) != maxEventPods {
			t.Errorf("%d events after a restart, want at most %d", len(evs), maxEventPods)
		}
		if all := strings.Join(names.pods, ","); strings.Contains(all, "p000") || !strings.Contains(all, "p069") {
			t.Errorf("not the newest pods told: %s", all)
		}
		m.announce(key, pods, leaf(0xabc), ext)
		if evs := told(rec); len(evs) != 0 {
			t.Errorf("%d events on the next resync, want none", len(evs))
		}
		// Steady state: a scale-up tells every new pod.
		var more []*corev1.Pod
		for i := range maxEventPods + 20 {
			more = append(more, pod(fmt.Sprintf("q%03d", i), issued.Add(48*time.Hour)))
		}
		m.announce(key, append(pods, more...), leaf(0xabc), ext)
		if evs := told(rec); len(evs) != len(more) {
			t.Errorf("%d events for %d new pods", len(evs), len(more))
		}
	})
}

// nameRecorder notes the names of the objects it records Events on.
type nameRecorder struct {
	record.EventRecorder
	pods []string
}

func (r *nameRecorder) Event(o runtime.Object, typ, reason, msg string) {
	r.pods = append(r.pods, o.(*corev1.Pod).Name)
	r.EventRecorder.Event(o, typ, reason, msg)
}
