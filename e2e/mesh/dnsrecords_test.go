package mesh

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/podtls/podtls/contract"
	"github.com/podtls/podtls/dnsrecords"
	"github.com/podtls/podtls/e2e/cluster"
	"github.com/podtls/podtls/internal/acmetest"
	"github.com/podtls/podtls/internal/gobuild"
)

const (
	recordsNS      = "records"
	recordsSecret  = "podtls-dns-records"
	recordsGrace   = 15 * time.Second
	shopHost       = "shop.records.example.test"
	takenHost      = "taken.records.example.test"
	foreignAddress = "198.51.100.1"
)

// TestDNSRecords publishes the external hosts of exposed pods on BIND9 (RFC 2136, TSIG)
// and follows their Services: a LoadBalancer address assigned late, then changed; a
// name someone else holds, left alone and reported; a wrong TSIG key and BIND down,
// reported and caught up afterwards; the Service deleted, its records and ownership
// TXT gone after the grace period.
func TestDNSRecords(t *testing.T) {
	cluster.Require(t, "DNS records")
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	root, err := gobuild.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	c, err := cluster.Up(ctx, cluster.Options{Images: buildImages(ctx, t, root), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Down() })
	acme := startNodeACME(ctx, t, c, log)
	t.Cleanup(acme.Close)
	t.Cleanup(func() {
		if t.Failed() {
			dump(t, c)
		}
	})
	cs := c.Client
	installWithACME(ctx, t, cs, acme, map[string]any{
		"allow": []any{map[string]any{"namespaces": []string{recordsNS}, "hosts": []string{"*.records.example.test"}}},
		// The DNS-01 key may write TXT only; records get their own key.
		"records": map[string]any{"enabled": true, "zone": "example.test", "ttl": 30, "ownerID": "e2e",
			"gracePeriod": recordsGrace.String(), "credentialsSecretRef": map[string]any{"name": recordsSecret}},
	})
	recordsKey := map[string]string{"RFC2136_TSIG_KEY": acme.RecordsKeyName, "RFC2136_TSIG_SECRET": acme.RecordsKeySecret}
	setRecordsKey(ctx, t, cs, recordsKey)
	if _, err := c.RunKubectl(ctx, "create", "namespace", recordsNS); err != nil {
		t.Fatal(err)
	}

	// A LoadBalancer Service without an address yet asks for nothing: once the
	// publisher has looked at it (state pending), the name still does not resolve.
	exposeHost(ctx, t, cs, "shop", shopHost, corev1.ServiceTypeLoadBalancer, "true")
	waitState(ctx, t, cs, "shop", contract.DNSRecordsPending, "no load balancer address")
	if got, err := acme.Lookup(ctx, shopHost, "A"); err == nil {
		t.Fatalf("%s resolves to %v before the load balancer has an address", shopHost, got)
	}
	for i, ip := range []string{"192.0.2.10", "192.0.2.11"} {
		t0 := time.Now()
		setLoadBalancerIP(ctx, t, cs, "shop", ip)
		waitRecord(ctx, t, acme, shopHost, ip)
		t.Logf("load balancer address %d (%s) published in %s", i+1, ip, time.Since(t0).Round(time.Millisecond))
	}
	owner, err := acme.Lookup(ctx, dnsrecords.OwnerName(shopHost, "A"), "TXT")
	if err != nil || len(owner) != 1 || owner[0] != "heritage=external-dns,external-dns/owner=e2e,external-dns/resource=service/records/shop" {
		t.Fatalf("ownership TXT of %s: %q, %v", shopHost, owner, err)
	}
	waitEvent(ctx, t, cs, "shop", dnsrecords.EventPublished, shopHost+" 30 A 192.0.2.11")
	waitState(ctx, t, cs, "shop", contract.DNSRecordsPublished, shopHost+" 30 A 192.0.2.11")

	// A name someone else holds: left alone, reported on the Service.
	if err := acme.AddRecord(ctx, takenHost, "A", foreignAddress); err != nil {
		t.Fatal(err)
	}
	exposeHost(ctx, t, cs, "taken", takenHost, corev1.ServiceTypeClusterIP, "192.0.2.20")
	waitEvent(ctx, t, cs, "taken", dnsrecords.EventConflict, takenHost+" A: ")
	waitState(ctx, t, cs, "taken", contract.DNSRecordsConflict, takenHost+" A: a record nobody owns exists")
	if got, err := acme.Lookup(ctx, takenHost, "A"); err != nil || !slices.Equal(got, []string{foreignAddress}) {
		t.Fatalf("someone else's %s changed: %v, %v", takenHost, got, err)
	}

	// A wrong TSIG key: reported; the change made meanwhile lands once the key is right.
	wrong := map[string]string{"RFC2136_TSIG_KEY": acme.RecordsKeyName, "RFC2136_TSIG_SECRET": "d3Jvbmcgc2VjcmV0IGZvciB0aGUgZTJl"}
	setRecordsKey(ctx, t, cs, wrong)
	setLoadBalancerIP(ctx, t, cs, "shop", "192.0.2.12")
	msg := waitEvent(ctx, t, cs, "shop", dnsrecords.EventError, "cannot read zone example.test")
	t.Logf("wrong TSIG key: Event %s: %s", dnsrecords.EventError, msg)
	waitState(ctx, t, cs, "shop", contract.DNSRecordsError, "bad authentication")
	if strings.Contains(msg, "d3Jvbmcg") || strings.Contains(msg, acme.RecordsKeySecret) {
		t.Fatalf("Event shows the TSIG secret: %s", msg)
	}
	t0 := time.Now()
	setRecordsKey(ctx, t, cs, recordsKey)
	waitRecord(ctx, t, acme, shopHost, "192.0.2.12")
	t.Logf("right key back: the pending address published in %s", time.Since(t0).Round(time.Millisecond))

	// BIND down: reported; the change made meanwhile lands when it is back.
	acme.StopDNS()
	setLoadBalancerIP(ctx, t, cs, "shop", "192.0.2.13")
	msg = waitEventMatching(ctx, t, cs, "shop", dnsrecords.EventError, "cannot read zone example.test (server down)", func(m string) bool {
		return strings.Contains(m, "cannot read zone example.test") && !strings.Contains(m, "bad authentication")
	})
	t.Logf("BIND down: Event %s: %s", dnsrecords.EventError, msg)
	if err := acme.ResumeDNS(ctx); err != nil {
		t.Fatal(err)
	}
	t0 = time.Now()
	waitRecord(ctx, t, acme, shopHost, "192.0.2.13")
	t.Logf("BIND back: the pending address published in %s", time.Since(t0).Round(time.Millisecond))
	for _, p := range controllerPods(ctx, t, cs) {
		for _, st := range p.Status.ContainerStatuses {
			if st.RestartCount > 0 {
				t.Fatalf("controller %s restarted %d times", p.Name, st.RestartCount)
			}
		}
	}

	// The Service deleted: its record and ownership TXT go after the grace period;
	// someone else's record stays.
	deleted := time.Now()
	if err := cs.CoreV1().Services(recordsNS).Delete(ctx, "shop", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, 2*time.Minute, shopHost+" and its ownership TXT removed", func() bool {
		_, errA := acme.Lookup(ctx, shopHost, "A")
		_, errT := acme.Lookup(ctx, dnsrecords.OwnerName(shopHost, "A"), "TXT")
		return errA != nil && errT != nil
	})
	if gone := time.Since(deleted); gone < recordsGrace || gone > recordsGrace+10*time.Second {
		t.Fatalf("records removed %s after the Service; want just after the %s grace period", gone, recordsGrace)
	} else {
		t.Logf("Service deleted: records removed after %s (grace period %s)", gone.Round(time.Millisecond), recordsGrace)
	}
	if got, err := acme.Lookup(ctx, takenHost, "A"); err != nil || !slices.Equal(got, []string{foreignAddress}) {
		t.Fatalf("someone else's %s changed: %v, %v", takenHost, got, err)
	}
}

// waitState waits for the Service's records status annotation to hold state
// with want in its message or records.
func waitState(ctx context.Context, t *testing.T, cs kubernetes.Interface, svc, state, want string) {
	t.Helper()
	var last string
	waitFor(ctx, t, time.Minute, "Service "+svc+" records status "+state+" with "+want, func() bool {
		s, err := cs.CoreV1().Services(recordsNS).Get(ctx, svc, metav1.GetOptions{})
		if err != nil {
			return false
		}
		last = s.Annotations[contract.DNSRecordsStatus]
		st, err := contract.DecodeDNSRecordState(last)
		return err == nil && st.State == state && strings.Contains(st.Message+strings.Join(st.Records, ";"), want)
	})
	t.Logf("Service %s: %s=%s", svc, contract.DNSRecordsStatus, last)
}

// setRecordsKey creates or replaces the records credentials Secret.
func setRecordsKey(ctx context.Context, t *testing.T, cs kubernetes.Interface, data map[string]string) {
	t.Helper()
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: recordsSecret, Namespace: systemNS}, StringData: data}
	if _, err := cs.CoreV1().Secrets(systemNS).Update(ctx, sec, metav1.UpdateOptions{}); err == nil {
		return
	}
	if _, err := cs.CoreV1().Secrets(systemNS).Create(ctx, sec, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// exposeHost runs a pod serving host and a Service for it asking for records.
func exposeHost(ctx context.Context, t *testing.T, cs kubernetes.Interface, name, host string, typ corev1.ServiceType, records string) {
	t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: recordsNS, Labels: map[string]string{"app": name},
			Annotations: map[string]string{contract.ExternalHosts: host}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: echoImage, ImagePullPolicy: corev1.PullNever}}},
	}
	if _, err := cs.CoreV1().Pods(recordsNS).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: recordsNS, Annotations: map[string]string{contract.DNSRecords: records}},
		Spec: corev1.ServiceSpec{Type: typ, Selector: map[string]string{"app": name},
			Ports: []corev1.ServicePort{{Name: "https", Port: 443, TargetPort: intstr.FromInt32(8443)}}},
	}
	if _, err := cs.CoreV1().Services(recordsNS).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// setLoadBalancerIP writes the Service's load balancer address, as a cloud's
// controller would.
func setLoadBalancerIP(ctx context.Context, t *testing.T, cs kubernetes.Interface, name, ip string) {
	t.Helper()
	patch, _ := json.Marshal(map[string]any{"status": map[string]any{"loadBalancer": map[string]any{"ingress": []any{map[string]any{"ip": ip}}}}})
	if _, err := cs.CoreV1().Services(recordsNS).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{}, "status"); err != nil {
		t.Fatal(err)
	}
}

func waitRecord(ctx context.Context, t *testing.T, acme *acmetest.Env, host, ip string) {
	t.Helper()
	waitFor(ctx, t, 2*time.Minute, host+" A "+ip+" on BIND", func() bool {
		got, err := acme.Lookup(ctx, host, "A")
		return err == nil && slices.Equal(got, []string{ip})
	})
}

// waitEvent waits for an Event with reason on the Service whose message
// contains want, and returns the message.
func waitEvent(ctx context.Context, t *testing.T, cs kubernetes.Interface, svc, reason, want string) string {
	t.Helper()
	return waitEventMatching(ctx, t, cs, svc, reason, want, func(m string) bool { return strings.Contains(m, want) })
}

func waitEventMatching(ctx context.Context, t *testing.T, cs kubernetes.Interface, svc, reason, what string, match func(string) bool) string {
	t.Helper()
	var msg string
	waitFor(ctx, t, 2*time.Minute, "Event "+reason+" on Service "+svc+" with "+what, func() bool {
		evs, err := cs.CoreV1().Events(recordsNS).List(ctx, metav1.ListOptions{FieldSelector: "reason=" + reason + ",involvedObject.name=" + svc})
		if err != nil {
			return false
		}
		for _, e := range evs.Items {
			if match(e.Message) {
				msg = e.Message
				return true
			}
		}
		return false
	})
	return msg
}
