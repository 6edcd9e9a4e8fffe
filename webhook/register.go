package webhook

import (
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/podtls/podtls/contract"
	"github.com/podtls/podtls/webhook/webhookconfig"
)

// Register serves both webhook paths on srv. namespaces should be backed by an
// informer cache (the manager's), so admissions make no API calls; secrets
// is a live reader (the manager's API reader) used only for pods naming an
// app-cert password Secret, nil to skip that check.
func Register(srv ctrlwebhook.Server, namespaces, secrets client.Reader, cfg *ConfigSource) {
	srv.Register(webhookconfig.PathLabelled, &admission.Webhook{Handler: &Handler{
		Namespaces:     namespaces,
		Secrets:        secrets,
		Config:         cfg,
		FallbackLabels: map[string]string{contract.Inject: contract.NamespaceEnabled},
	}})
	srv.Register(webhookconfig.PathOptIn, &admission.Webhook{Handler: &Handler{Namespaces: namespaces, Secrets: secrets, Config: cfg}})
}
