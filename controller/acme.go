package controller

import (
	"context"
	"log/slog"

	"k8s.io/client-go/kubernetes"

	"github.com/podtls/podtls/ca/acme"
	"github.com/podtls/podtls/ca/acme/config"
	acmemanager "github.com/podtls/podtls/ca/acme/manager"
	"github.com/podtls/podtls/controller/options"
)

// newACMEManager builds the ACME manager; without --acme-config it only
// tells pods asking for external hosts that no issuer is configured.
func newACMEManager(opts options.Options, kube kubernetes.Interface, slogger *slog.Logger) *acmemanager.Manager {
	mo := acmemanager.Options{ConfigFile: opts.ACMEConfig}
	if opts.ACMEConfig != "" {
		mo.ParseConfig = config.Parse
		mo.NewIssuer = func(ctx context.Context, cfg config.Config) (acmemanager.Issuer, error) {
			iss, err := acme.NewIssuer(ctx, cfg, acme.IssuerOptions{
				Namespace: opts.Namespace, Kube: kube, Logger: slogger.With("component", "acme-issuer"),
			})
			if err != nil {
				return nil, err
			}
			return iss, nil
		}
	}
	return acmemanager.New(mo)
}
