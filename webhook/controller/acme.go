package controller

import (
	"log/slog"

	"k8s.io/client-go/kubernetes"

	acmemanager "github.com/podtls/podtls/ca/acme/manager"
)

// newACMEManager builds the ACME manager; without --acme-config it only
// tells pods asking for external hosts that no issuer is configured.
func newACMEManager(opts Options, _ kubernetes.Interface, _ *slog.Logger) *acmemanager.Manager {
	return acmemanager.New(acmemanager.Options{ConfigFile: opts.ACMEConfig})
}
