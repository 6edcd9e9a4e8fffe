package options

import (
	"errors"
	"flag"
	"fmt"
	"slices"

	"github.com/podtls/podtls/contract"
)

// AppCerts configures app-owned certificate files (podtls.io/app-certs).
type AppCerts struct {
	Dir          string
	Sources      []string
	Formats      []string
	PasswordFile string
	PKCS12       string
	Reload       contract.Reload
}

// appCertFlags holds the raw app-cert flags until apply validates them.
type appCertFlags struct {
	dir, sources, formats, passwordFile, pkcs12, reload string
}

func (a *appCertFlags) bind(fs *flag.FlagSet) {
	fs.StringVar(&a.dir, "app-cert-dir", "", "`DIR` (a volume the app containers mount) to write the certificates into for apps that terminate TLS themselves, one subdirectory per source, each replaced atomically")
	fs.StringVar(&a.sources, "app-cert-sources", contract.AppSourceMesh, "with --app-cert-dir: `SOURCES` to write, comma-separated: mesh (identity and roots), external (the first --external-cert-dir)")
	fs.StringVar(&a.formats, "app-cert-formats", contract.FormatPEM, "with --app-cert-dir: `FORMATS`, comma-separated: pem, pkcs12, jks")
	fs.StringVar(&a.passwordFile, "app-cert-password-file", "", "with --app-cert-dir: `FILE` holding the PKCS#12 and JKS password, re-read on change; default: generate one and write it beside the stores as store.password")
	fs.StringVar(&a.pkcs12, "app-cert-pkcs12", contract.PKCS12Modern, "with --app-cert-dir: PKCS#12 `ENCRYPTION`: modern (AES-256-CBC, PBKDF2-HMAC-SHA-256) or legacy (3DES, SHA-1; old JVMs)")
	fs.StringVar(&a.reload, "app-cert-reload", contract.ReloadNone, "with --app-cert-dir: `ACTION` after the files changed: none, signal[:SIGNAL[:PROCESS]] (main processes of the other containers; needs a shared process namespace) or http:PORT[/PATH] (POST on localhost)")
}

// apply validates the app-cert flags into c; --external-cert-dir must be
// parsed already.
func (a *appCertFlags) apply(c *Config) error {
	if a.dir == "" {
		if a.passwordFile != "" {
			return errors.New("--app-cert-password-file needs --app-cert-dir")
		}
		return nil
	}
	ac := &AppCerts{Dir: a.dir, PasswordFile: a.passwordFile}
	for _, s := range contract.SplitList(a.sources) {
		if s != contract.AppSourceMesh && s != contract.AppSourceExternal || slices.Contains(ac.Sources, s) {
			return fmt.Errorf("--app-cert-sources %q: want mesh and/or external, each once", a.sources)
		}
		ac.Sources = append(ac.Sources, s)
	}
	if len(ac.Sources) == 0 {
		return errors.New("--app-cert-sources is empty")
	}
	if slices.Contains(ac.Sources, contract.AppSourceExternal) && len(c.ExternalCertDirs) == 0 {
		return errors.New("--app-cert-sources external needs --external-cert-dir")
	}
	for _, f := range contract.SplitList(a.formats) {
		if f != contract.FormatPEM && f != contract.FormatPKCS12 && f != contract.FormatJKS || slices.Contains(ac.Formats, f) {
			return fmt.Errorf("--app-cert-formats %q: want pem, pkcs12 and/or jks, each once", a.formats)
		}
		ac.Formats = append(ac.Formats, f)
	}
	if len(ac.Formats) == 0 {
		return errors.New("--app-cert-formats is empty")
	}
	switch a.pkcs12 {
	case contract.PKCS12Modern:
	case contract.PKCS12Legacy:
		ac.PKCS12 = contract.PKCS12Legacy
	default:
		return fmt.Errorf("--app-cert-pkcs12 %q: want modern or legacy", a.pkcs12)
	}
	r, err := contract.ParseReload(a.reload)
	if err != nil {
		return fmt.Errorf("--app-cert-reload: %w", err)
	}
	if r.Action == contract.ReloadRestart {
		return errors.New("--app-cert-reload restart is the controller's (it rolls the workload); the sidecar takes none, signal or http")
	}
	ac.Reload = r
	c.AppCerts = ac
	return nil
}
