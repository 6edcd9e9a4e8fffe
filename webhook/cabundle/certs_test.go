package cabundle

import (
	"context"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/podtls/podtls/webhook/webhookconfig"
)

func TestSync(t *testing.T) {
	bundle := []byte("-----BEGIN CERTIFICATE-----\nROOT\n-----END CERTIFICATE-----\n")
	for _, url := range []string{"", "https://127.0.0.1:9443"} {
		t.Run("url="+url, func(t *testing.T) {
			c := fake.NewClientBuilder().WithObjects(webhookconfig.MutatingWebhookConfiguration(webhookconfig.DefaultOptions())).Build()
			p := &Patcher{Reader: c, Writer: c, Name: "podtls", URL: url, Bundle: func() []byte { return bundle }}
			if p.Ready() == nil {
				t.Fatal("ready before the first patch")
			}
			changed, err := p.Sync(context.Background())
			if err != nil || !changed {
				t.Fatalf("first sync: changed=%v err=%v", changed, err)
			}
			if p.Ready() != nil {
				t.Error("not ready after patching")
			}
			got := &admissionregistrationv1.MutatingWebhookConfiguration{}
			if err := c.Get(context.Background(), types.NamespacedName{Name: "podtls"}, got); err != nil {
				t.Fatal(err)
			}
			for _, w := range got.Webhooks {
				if string(w.ClientConfig.CABundle) != string(bundle) {
					t.Errorf("%s: caBundle not set", w.Name)
				}
				if url != "" && (w.ClientConfig.Service != nil || w.ClientConfig.URL == nil || *w.ClientConfig.URL != url+hookPath(webhookconfig.ClientConfig(webhookconfig.DefaultOptions(), pathOf(w.Name)))) {
					t.Errorf("%s: client config %+v", w.Name, w.ClientConfig)
				}
			}
			if changed, err := p.Sync(context.Background()); err != nil || changed {
				t.Errorf("second sync: changed=%v err=%v", changed, err)
			}
		})
	}
}

func pathOf(name string) string {
	for _, w := range webhookconfig.MutatingWebhookConfiguration(webhookconfig.DefaultOptions()).Webhooks {
		if w.Name == name {
			return *w.ClientConfig.Service.Path
		}
	}
	return ""
}

func TestSyncErrors(t *testing.T) {
	c := fake.NewClientBuilder().Build()
	p := &Patcher{Reader: c, Writer: c, Name: "missing", Bundle: func() []byte { return []byte("x") }}
	if _, err := p.Sync(context.Background()); err == nil || p.Ready() == nil {
		t.Error("missing configuration must fail and stay unready")
	}
	p.Bundle = func() []byte { return nil }
	if _, err := p.Sync(context.Background()); err == nil {
		t.Error("empty bundle must fail")
	}
}
