package appcerts

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/podtls/podtls/sidecar/atomicdir"
)

// Real tools nobody here wrote read what Render writes: keytool (OpenJDK),
// openssl pkcs12, a JDK HttpsServer serving with the stores, curl as its
// client. make test installs them (hack/install-test-deps.sh).

func needTool(t *testing.T, name, pkg string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		if os.Getenv("CI") != "" || os.Getenv("PODTLS_REQUIRE_TOOLS") != "" {
			t.Fatalf("%s not installed (apt-get install %s)", name, pkg)
		}
		t.Skipf("%s not installed (apt-get install %s)", name, pkg)
	}
}

func writeStores(t *testing.T, m Material, o Options) string {
	t.Helper()
	files, err := Render(m, o)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := atomicdir.Write(dir, files); err != nil {
		t.Fatal(err)
	}
	return dir
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func mustContain(t *testing.T, what, out string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Fatalf("%s: output lacks %q:\n%s", what, w, out)
		}
	}
}

func TestKeytoolReadsStores(t *testing.T) {
	needTool(t, "keytool", "default-jdk-headless")
	m := meshMaterial(t)
	const pw = "changeit-not"
	for _, pkcs12Mode := range []string{"", "legacy"} {
		dir := writeStores(t, m, Options{Formats: []string{"pkcs12", "jks"}, PKCS12: pkcs12Mode, Password: pw})
		// go-pkcs12 writes no friendly name: Java calls the PKCS#12 key entry "1".
		for _, store := range []struct{ file, typ, alias string }{{KeystoreJKS, "JKS", KeyAlias}, {KeystoreP12, "PKCS12", "1"}} {
			out := run(t, "keytool", "-list", "-v", "-storetype", store.typ, "-keystore", filepath.Join(dir, store.file), "-storepass", pw)
			mustContain(t, store.file, out, "Your keystore contains 1 entry", "Alias name: "+store.alias+"\n", "Entry type: PrivateKeyEntry",
				"Certificate chain length: 2", "spiffe://cluster.local/ns/demo/sa/app", "CN=intermediate")
		}
		for _, store := range []struct{ file, typ string }{{TruststoreJKS, "JKS"}, {TruststoreP12, "PKCS12"}} {
			out := run(t, "keytool", "-list", "-v", "-storetype", store.typ, "-keystore", filepath.Join(dir, store.file), "-storepass", pw)
			mustContain(t, store.file, out, "Your keystore contains 2 entries", "trustedCertEntry", "CN=root", "CN=next root")
		}
		cmd := exec.Command("keytool", "-list", "-storetype", "JKS", "-keystore", filepath.Join(dir, KeystoreJKS), "-storepass", "wrong-password")
		if out, err := cmd.CombinedOutput(); err == nil {
			t.Fatalf("keytool opened the keystore with a wrong password:\n%s", out)
		}
	}
}

func TestOpenSSLReadsPKCS12(t *testing.T) {
	needTool(t, "openssl", "openssl")
	m := meshMaterial(t)
	const pw = "changeit-not"
	for mode, algo := range map[string]string{"": "AES-256-CBC", "legacy": "pbeWithSHA1And3-KeyTripleDES-CBC"} {
		dir := writeStores(t, m, Options{Formats: []string{"pkcs12"}, PKCS12: mode, Password: pw})
		out := run(t, "openssl", "pkcs12", "-in", filepath.Join(dir, KeystoreP12), "-passin", "pass:"+pw, "-info", "-nodes")
		mustContain(t, "openssl pkcs12 ("+mode+")", out, algo, "BEGIN PRIVATE KEY", "intermediate", "BEGIN CERTIFICATE")
		if strings.Count(out, "BEGIN CERTIFICATE") != 2 {
			t.Fatalf("openssl pkcs12 (%s): want the leaf and the intermediate:\n%s", mode, out)
		}
	}
}

// TestJavaServesWithStores runs a JDK HttpsServer with the JKS and then
// the PKCS#12 stores and calls it with curl over mTLS, verifying the server
// against ca.crt and presenting another workload's certificate.
func TestJavaServesWithStores(t *testing.T) {
	needTool(t, "java", "default-jdk-headless")
	needTool(t, "curl", "curl")
	m := meshMaterial(t)
	dir := writeStores(t, m, Options{Formats: []string{"pem", "pkcs12", "jks"}, Password: "0123456789abcdef0123456789abcdef", WritePassword: true})
	// A workload of another trust root: the JVM must refuse it.
	stranger := writeStores(t, meshMaterial(t), Options{Formats: []string{"pem"}})
	for _, store := range []struct{ ks, ts, typ string }{{KeystoreJKS, TruststoreJKS, "JKS"}, {KeystoreP12, TruststoreP12, "PKCS12"}} {
		t.Run(store.typ, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, "java", "testdata/Server.java",
				filepath.Join(dir, store.ks), filepath.Join(dir, store.ts), store.typ, filepath.Join(dir, PasswordFile))
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			var stderr strings.Builder
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
			sc := bufio.NewScanner(stdout)
			if !sc.Scan() {
				_ = cmd.Wait()
				t.Fatalf("java server did not start: %s", stderr.String())
			}
			port := strings.TrimSpace(sc.Text())
			url := "https://app.demo.svc:" + port + "/"
			resolve := "app.demo.svc:" + port + ":127.0.0.1"
			// The caller presents the same workload's files: a certificate
			// that chains to a root in the truststore.
			out := run(t, "curl", "-sS", "--fail", "--resolve", resolve, "--cacert", filepath.Join(dir, CAFile),
				"--cert", filepath.Join(dir, CertFile), "--key", filepath.Join(dir, KeyFile), url)
			mustContain(t, "curl", out, "hello from java to spiffe://cluster.local/ns/demo/sa/app via TLSv1.3")

			// Without a client certificate, or with one of another root,
			// the JVM refuses the handshake.
			for name, extra := range map[string][]string{
				"no certificate":     nil,
				"another trust root": {"--cert", filepath.Join(stranger, CertFile), "--key", filepath.Join(stranger, KeyFile)},
			} {
				args := append([]string{"-sS", "--fail", "--resolve", resolve, "--cacert", filepath.Join(dir, CAFile), url}, extra...)
				if out, err := exec.CommandContext(ctx, "curl", args...).CombinedOutput(); err == nil {
					t.Fatalf("java server answered a client with %s: %s", name, out)
				}
			}
		})
	}
}
