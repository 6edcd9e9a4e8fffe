package check

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"

	"github.com/podtls/podtls/acme/issuerconfig"
	"github.com/podtls/podtls/acme/status"
	"github.com/podtls/podtls/ca"
	"github.com/podtls/podtls/cli/output"
	"github.com/podtls/podtls/contract"
	"github.com/podtls/podtls/webhook/webhookconfig"
)

var now = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)

func caSecret(t *testing.T, intermediateLeft time.Duration) (*corev1.Secret, []byte) {
	t.Helper()
	m, err := ca.Generate(now.Add(-ca.IntermediateLifetime+intermediateLeft), ca.Backdate)
	if err != nil {
		t.Fatal(err)
	}
	key, err := x509.MarshalPKCS8PrivateKey(m.Key)
	if err != nil {
		t.Fatal(err)
	}
	roots := m.TrustBundlePEM()
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "podtls-ca", Namespace: "podtls-system"},
		Data: map[string][]byte{ca.KeyCert: m.ChainPEM(), ca.KeyRoots: roots,
			ca.KeyKey: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key})},
	}, roots
}

// healthy is a complete installation; each case breaks one thing.
func healthy(t *testing.T) ([]runtime.Object, []byte) {
	sec, roots := caSecret(t, 200*24*time.Hour)
	labels := map[string]string{"app": "podtls-controller"}
	mwc := webhookconfig.MutatingWebhookConfiguration(webhookconfig.Options{Name: "podtls", Namespace: "podtls-system", ServiceName: "podtls-controller", CABundle: roots})
	return []runtime.Object{
		sec, mwc,
		&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "podtls-controller", Namespace: "podtls-system"},
			Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](1), Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "controller", Args: []string{"--namespace", "podtls-system"}}}}}}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "ctrl-0", Namespace: "podtls-system", Labels: labels},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{contract.Inject: contract.NamespaceEnabled}}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: contract.TrustBundleConfigMap, Namespace: "shop"}, Data: map[string]string{contract.TrustBundleKey: string(roots)}},
	}, roots
}

func externalSecret(name string, e status.External) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop",
		Labels:      map[string]string{contract.ManagedByLabel: contract.ManagedByValue, contract.ComponentLabel: status.ComponentExternalCert},
		Annotations: e.Encode(nil)}}
}

func TestRun(t *testing.T) {
	issued := status.External{Hosts: []string{"shop.example.com"}, Serial: "ab", CertIssuer: "CN=Pebble",
		NotBefore: now.Add(-24 * time.Hour), NotAfter: now.Add(60 * 24 * time.Hour), RenewAt: now.Add(30 * 24 * time.Hour)}
	failing := issued
	failing.LastError, failing.Failures = "DNS problem: NXDOMAIN", 3
	acmeCM := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: ACMEConfigMap, Namespace: "podtls-system"},
		Data: map[string]string{ACMEConfigKey: "directoryURL: https://acme.example/dir\ndns: {provider: rfc2136}\n"}}
	account := func(dir string) *corev1.Secret {
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: issuerconfig.DefaultAccountSecret, Namespace: "podtls-system",
			Annotations: status.Account{Directory: dir, URI: "https://acme.example/acct/1"}.Encode(nil)}}
	}
	for _, tc := range []struct {
		name   string
		change func(objs []runtime.Object) []runtime.Object
		id     string
		want   output.Level
		object string
	}{
		{"healthy", nil, IDUninjectedPods, output.OK, ""},
		{"no acme is a skip", nil, IDACMEIssuer, output.Skip, ""},
		{"intermediate in 20 days", func(o []runtime.Object) []runtime.Object {
			sec, roots := caSecret(t, 20*24*time.Hour)
			o[0] = sec
			o[1] = webhookconfig.MutatingWebhookConfiguration(webhookconfig.Options{Name: "podtls", Namespace: "podtls-system", CABundle: roots})
			return append(o[:5], &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: contract.TrustBundleConfigMap, Namespace: "shop"}, Data: map[string]string{contract.TrustBundleKey: string(roots)}})
		}, IDCAIntermediate, output.Warn, ""},
		{"intermediate in 3 days", func(o []runtime.Object) []runtime.Object {
			sec, _ := caSecret(t, 3*24*time.Hour)
			o[0] = sec
			return o
		}, IDCAIntermediate, output.Fail, ""},
		{"stale caBundle", func(o []runtime.Object) []runtime.Object {
			o[1] = webhookconfig.MutatingWebhookConfiguration(webhookconfig.Options{Name: "podtls", Namespace: "podtls-system", CABundle: []byte("old")})
			return o
		}, IDWebhookCABundle, output.Fail, webhookconfig.LabelledWebhook},
		{"controller not ready", func(o []runtime.Object) []runtime.Object {
			o[3].(*corev1.Pod).Status.Conditions = nil
			return o
		}, IDControllerPods, output.Fail, "podtls-system/ctrl-0"},
		{"stale trust bundle", func(o []runtime.Object) []runtime.Object {
			o[5].(*corev1.ConfigMap).Data[contract.TrustBundleKey] = "old"
			return o
		}, IDTrustBundles, output.Fail, "shop: differs from the CA roots"},
		{"opt-in pod without sidecar", func(o []runtime.Object) []runtime.Object {
			return append(o, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "plain",
				Annotations: map[string]string{contract.Inject: "true", contract.Inbound: "8443:8080"}}})
		}, IDUninjectedPods, output.Fail, "plain/p: pod-enabled"},
		{"finished pod is not reported", func(o []runtime.Object) []runtime.Object {
			return append(o, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "job", Namespace: "shop",
				Annotations: map[string]string{contract.Inbound: "8443:8080"}}, Status: corev1.PodStatus{Phase: corev1.PodSucceeded}})
		}, IDUninjectedPods, output.OK, ""},
		{"external cert failing", func(o []runtime.Object) []runtime.Object {
			return append(o, externalSecret("podtls-ext-1", issued), externalSecret("podtls-ext-2", failing))
		}, IDExternalCerts, output.Fail, "shop/podtls-ext-2: 3 failures: DNS problem: NXDOMAIN"},
		{"external cert overdue", func(o []runtime.Object) []runtime.Object {
			e := issued
			e.RenewAt = now.Add(-48 * time.Hour)
			return append(o, externalSecret("podtls-ext-1", e))
		}, IDExternalCerts, output.Warn, "renewal overdue"},
		{"external cert about to expire", func(o []runtime.Object) []runtime.Object {
			e := issued
			e.NotBefore, e.NotAfter = now.Add(-85*24*time.Hour), now.Add(5*24*time.Hour)
			return append(o, externalSecret("podtls-ext-1", e))
		}, IDExternalCerts, output.Fail, "not renewed"},
		{"acme account registered", func(o []runtime.Object) []runtime.Object {
			return append(o, acmeCM, account("https://acme.example/dir"))
		}, IDACMEAccount, output.OK, ""},
		{"acme account of another directory", func(o []runtime.Object) []runtime.Object {
			return append(o, acmeCM, account("https://other.example/dir"))
		}, IDACMEAccount, output.Fail, ""},
		{"acme config without provider", func(o []runtime.Object) []runtime.Object {
			cm := acmeCM.DeepCopy()
			cm.Data[ACMEConfigKey] = "email: a@b.c\n"
			return append(o, cm)
		}, IDACMEIssuer, output.Fail, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs, _ := healthy(t)
			if tc.change != nil {
				objs = tc.change(objs)
			}
			kube := fake.NewClientset(objs...)
			opts := DefaultOptions()
			opts.Now = func() time.Time { return now }
			rep := Run(context.Background(), kube, opts)
			var got *Result
			for i := range rep.Checks {
				if rep.Checks[i].ID == tc.id {
					got = &rep.Checks[i]
				}
			}
			if got == nil {
				t.Fatalf("no check %s in %+v", tc.id, rep.Checks)
			}
			if got.Level != tc.want {
				t.Errorf("%s: %s (%s), want %s", tc.id, got.Level, got.Message, tc.want)
			}
			if tc.want != output.OK && tc.want != output.Skip && got.Hint == "" {
				t.Errorf("%s: no hint", tc.id)
			}
			if tc.object != "" && !strings.Contains(strings.Join(got.Objects, "\n")+got.Message, tc.object) {
				t.Errorf("%s: objects %q lack %q", tc.id, got.Objects, tc.object)
			}
			if rep.Failed() != (rep.Level == output.Fail) {
				t.Error("Failed disagrees with Level")
			}
		})
	}
}

func TestEveryCheckAlwaysReported(t *testing.T) {
	// An empty cluster: every ID still appears, so JSON consumers can rely on them.
	rep := Run(context.Background(), fake.NewClientset(), Options{Namespace: "podtls-system", Now: func() time.Time { return now }})
	ids := map[string]bool{}
	for _, c := range rep.Checks {
		ids[c.ID] = true
	}
	for _, id := range []string{IDControllerPods, IDCASecret, IDCARoot, IDCAIntermediate, IDWebhookConfig, IDWebhookCABundle,
		IDWebhookServingCert, IDTrustBundles, IDPodCertificates, IDACMEIssuer, IDACMEAccount, IDExternalCerts, IDUninjectedPods, IDPlaintextBypass} {
		if !ids[id] {
			t.Errorf("check %s missing from %v", id, ids)
		}
	}
	if !rep.Failed() {
		t.Error("an empty cluster must fail")
	}
}
