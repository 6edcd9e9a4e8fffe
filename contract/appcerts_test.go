package contract

import (
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestParseAppCerts(t *testing.T) {
	base := map[string]string{Inbound: "8443:8080"}
	with := func(kv ...string) map[string]string {
		a := map[string]string{}
		for k, v := range base {
			a[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			a[kv[i]] = kv[i+1]
		}
		return a
	}
	tests := []struct {
		name    string
		ann     map[string]string
		want    *AppCertSpec
		wantErr string
		warn    string
	}{
		{name: "off", ann: with(), want: nil},
		{name: "defaults: mesh, pem, none", ann: with(AppCerts, "/etc/tls"),
			want: &AppCertSpec{Path: "/etc/tls", Sources: []string{"mesh"}, Formats: []string{"pem"}, Reload: Reload{Action: "none"}}},
		{name: "external hosts add the external source", ann: with(AppCerts, "/etc/tls", ExternalHosts, "shop.example.com"),
			want: &AppCertSpec{Path: "/etc/tls", Sources: []string{"mesh", "external"}, Formats: []string{"pem"}, Reload: Reload{Action: "none"}}},
		{name: "no listener needed", ann: map[string]string{AppCerts: "/certs"},
			want: &AppCertSpec{Path: "/certs", Sources: []string{"mesh"}, Formats: []string{"pem"}, Reload: Reload{Action: "none"}}},
		{name: "everything", ann: with(AppCerts, "/opt/app/tls", ExternalHosts, "shop.example.com", AppCertSources, "external",
			AppCertFormats, "jks, pkcs12,pem", AppCertPassword, "store-pass/pw", AppCertPKCS12, "legacy", AppCertReload, "restart"),
			want: &AppCertSpec{Path: "/opt/app/tls", Sources: []string{"external"}, Formats: []string{"jks", "pkcs12", "pem"},
				PasswordSecret: "store-pass", PasswordKey: "pw", PKCS12: "legacy", Reload: Reload{Action: "restart"}}},
		{name: "password key defaults", ann: with(AppCerts, "/etc/tls", AppCertFormats, "jks", AppCertPassword, "store-pass"),
			want: &AppCertSpec{Path: "/etc/tls", Sources: []string{"mesh"}, Formats: []string{"jks"}, PasswordSecret: "store-pass",
				PasswordKey: "password", Reload: Reload{Action: "none"}}},
		{name: "signal", ann: with(AppCerts, "/etc/tls", AppCertReload, "signal"),
			want: &AppCertSpec{Path: "/etc/tls", Sources: []string{"mesh"}, Formats: []string{"pem"}, Reload: Reload{Action: "signal", Signal: "SIGHUP"}}},
		{name: "signal with process", ann: with(AppCerts, "/etc/tls", AppCertReload, "signal:usr1:nginx"),
			want: &AppCertSpec{Path: "/etc/tls", Sources: []string{"mesh"}, Formats: []string{"pem"}, Reload: Reload{Action: "signal", Signal: "SIGUSR1", Process: "nginx"}}},
		{name: "http", ann: with(AppCerts, "/etc/tls", AppCertReload, "http:9090/-/reload"),
			want: &AppCertSpec{Path: "/etc/tls", Sources: []string{"mesh"}, Formats: []string{"pem"}, Reload: Reload{Action: "http", Port: 9090, Path: "/-/reload"}}},

		{name: "password unused", ann: with(AppCerts, "/etc/tls", AppCertPassword, "p"), warn: "no store format",
			want: &AppCertSpec{Path: "/etc/tls", Sources: []string{"mesh"}, Formats: []string{"pem"}, PasswordSecret: "p", PasswordKey: "password", Reload: Reload{Action: "none"}}},

		{name: "relative path", ann: with(AppCerts, "etc/tls"), wantErr: "not an absolute path"},
		{name: "unclean path", ann: with(AppCerts, "/etc/../tls"), wantErr: "not clean"},
		{name: "system dir", ann: with(AppCerts, "/etc"), wantErr: "system directory"},
		{name: "podtls dir", ann: with(AppCerts, "/var/run/podtls/app"), wantErr: "reserved"},
		{name: "colon", ann: with(AppCerts, "/etc/a:b"), wantErr: "contains"},
		{name: "settings without app-certs", ann: with(AppCertFormats, "jks"), wantErr: "set without podtls.io/app-certs"},
		{name: "unknown format", ann: with(AppCerts, "/etc/tls", AppCertFormats, "der"), wantErr: `format "der" is unknown`},
		{name: "twice", ann: with(AppCerts, "/etc/tls", AppCertFormats, "pem,pem"), wantErr: "listed twice"},
		{name: "empty formats", ann: with(AppCerts, "/etc/tls", AppCertFormats, " , "), wantErr: "empty"},
		{name: "unknown source", ann: with(AppCerts, "/etc/tls", AppCertSources, "acme"), wantErr: `source "acme" is unknown`},
		{name: "external without hosts", ann: with(AppCerts, "/etc/tls", AppCertSources, "external"), wantErr: "without external hosts"},
		{name: "bad secret name", ann: with(AppCerts, "/etc/tls", AppCertFormats, "jks", AppCertPassword, "Store_Pass"), wantErr: "not a Secret name"},
		{name: "bad secret key", ann: with(AppCerts, "/etc/tls", AppCertFormats, "jks", AppCertPassword, "s/a b"), wantErr: "not a Secret key"},
		{name: "bad pkcs12", ann: with(AppCerts, "/etc/tls", AppCertFormats, "pkcs12", AppCertPKCS12, "rc2"), wantErr: `"modern" (the default) or "legacy"`},
		{name: "restart of mesh certificates", ann: with(AppCerts, "/etc/tls", AppCertReload, "restart"), wantErr: "each renewal would roll the workload"},
		{name: "unknown action", ann: with(AppCerts, "/etc/tls", AppCertReload, "kill"), wantErr: `action "kill" is unknown`},
		{name: "unknown signal", ann: with(AppCerts, "/etc/tls", AppCertReload, "signal:KILL"), wantErr: `signal "SIGKILL" is not one of`},
		{name: "bad process", ann: with(AppCerts, "/etc/tls", AppCertReload, "signal:HUP:a b"), wantErr: "process"},
		{name: "http without port", ann: with(AppCerts, "/etc/tls", AppCertReload, "http"), wantErr: "want http:PORT"},
		{name: "http admin port", ann: with(AppCerts, "/etc/tls", AppCertReload, "http:15000/reload"), wantErr: "admin port"},
		{name: "http query", ann: with(AppCerts, "/etc/tls", AppCertReload, "http:80/r?x=1"), wantErr: "without query"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec, warns, err := Parse(tt.ann, "demo", Defaults{TrustDomain: "cluster.local", ClusterDomain: "cluster.local"})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(spec.AppCerts, tt.want) {
				t.Fatalf("AppCerts = %+v, want %+v", spec.AppCerts, tt.want)
			}
			if got := strings.Join(warns, "; "); (tt.warn == "") != (got == "") || !strings.Contains(got, tt.warn) {
				t.Fatalf("warnings %q, want %q", got, tt.warn)
			}
		})
	}
}

func TestReloadString(t *testing.T) {
	for _, v := range []string{"none", "restart", "signal:SIGHUP", "signal:SIGUSR2:nginx", "http:9090/-/reload", "http:80/"} {
		r, err := ParseReload(v)
		if err != nil {
			t.Fatalf("%s: %v", v, err)
		}
		if r.String() != v {
			t.Fatalf("ParseReload(%q).String() = %q", v, r.String())
		}
	}
}

func FuzzParseReload(f *testing.F) {
	for _, s := range []string{"none", "restart", "signal", "signal:HUP:nginx", "http:9090/-/reload", "http:1", "signal::", "http:/x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		r, err := ParseReload(v)
		if err != nil {
			return
		}
		again, err := ParseReload(r.String())
		if err != nil || again != r {
			t.Fatalf("%q parsed to %+v, which renders %q and parses to %+v, %v", v, r, r.String(), again, err)
		}
		if r.Action == ReloadHTTP && (r.Port < 1 || r.Port == AdminPort || !strings.HasPrefix(r.Path, "/") || strings.ContainsAny(r.Path, "? #")) {
			t.Fatalf("accepted %+v", r)
		}
	})
}

func FuzzParseAppCerts(f *testing.F) {
	f.Add("/etc/tls", "mesh,external", "pem,jks", "pass/key", "signal:HUP:nginx")
	f.Add("/a", "", "pkcs12", "", "http:80/x")
	f.Fuzz(func(t *testing.T, p, sources, formats, password, reload string) {
		ann := map[string]string{ExternalHosts: "shop.example.com", AppCerts: p, AppCertSources: sources,
			AppCertFormats: formats, AppCertPassword: password, AppCertReload: reload}
		spec, _, err := Parse(ann, "demo", Defaults{TrustDomain: "cluster.local"})
		if err != nil {
			return
		}
		ac := spec.AppCerts
		if ac == nil || ValidateAppCertPath(ac.Path) != nil || len(ac.Sources) == 0 || len(ac.Formats) == 0 {
			t.Fatalf("accepted %+v", ac)
		}
		if ac.Reload.Action == ReloadRestart && slices.Contains(ac.Sources, AppSourceMesh) {
			t.Fatalf("restart accepted for mesh: %+v", ac)
		}
	})
}
