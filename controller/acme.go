package controller

import (
	"context"
	"log/slog"

	"k8s.io/client-go/kubernetes"

	"github.com/podtls/podtls/acme"
	"github.com/podtls/podtls/acme/issuerconfig"
	"github.com/podtls/podtls/acme/providers"
	"github.com/podtls/podtls/acme/reconciler"
	"github.com/podtls/podtls/controller/options"
)

// newACMEManager builds the ACME manager; without --acme-config it only
// tells pods asking for external hosts that no issuer is configured.
func newACMEManager(opts options.Options, kube kubernetes.Interface, slogger *slog.Logger) *reconciler.Manager {
	mo := reconciler.Options{ConfigFile: opts.ACMEConfig}
	if opts.ACMEConfig != "" {
		mo.ParseConfig = func(b []byte) (issuerconfig.Config, error) { return issuerconfig.Parse(b, providers.Catalog) }
		mo.NewIssuer = func(ctx context.Context, cfg issuerconfig.Config) (reconciler.Issuer, error) {
			iss, err := acme.NewIssuer(ctx, cfg, acme.IssuerOptions{
				Namespace: opts.Namespace, Kube: kube, Logger: slogger.With("component", "acme-issuer"),
			})
			if err != nil {
				return nil, err
			}
			return iss, nil
		}
	}
	return reconciler.New(mo)
}
