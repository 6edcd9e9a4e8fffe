package demo

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podtls/podtls/acme/status"
	"github.com/podtls/podtls/contract"
	"github.com/podtls/podtls/e2e/cluster"
	"github.com/podtls/podtls/internal/acmetest"
)

const (
	// PublicHost is customer's public name (manifests/examples/demo.yaml).
	PublicHost = "customer.demo.example.test"
	// publicService exposes customer's sidecar on the node (NodePort).
	publicService  = "customer-public"
	dnsCredentials = "podtls-dns-credentials"
	// recordsCredentials holds the TSIG key podtls publishes address records with
	// (the DNS-01 key may write TXT records only).
	recordsCredentials = "podtls-dns-records"
	waitIssued         = 3 * time.Minute
)

// startACME starts BIND9 and Pebble inside the node's network namespace, on the node
// IP: pods (the controller) reach them there, Pebble reaches BIND there, and nothing
// listens outside the namespace.
func (r *run) startACME(ctx context.Context) error {
	netns := "podtls-e2e-" + r.c.ID
	env, err := acmetest.Start(ctx, acmetest.Options{
		ListenIP: cluster.NodeIP,
		Zone:     "example.test.",
		Command: func(ctx context.Context, name string, args ...string) *exec.Cmd {
			// ip netns exec replaces itself with the program: signals reach it.
			return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", netns, name}, args...)...)
		},
		DialContext: r.c.DialContext,
		Logger:      r.opts.Logger,
	})
	if err != nil {
		return err
	}
	r.acme = env
	r.printf("    BIND9 %s (zone %s, RFC 2136 updates signed with TSIG %s)\n", env.DNSAddr, env.Zone, env.TSIGAlgorithm)
	r.printf("    Pebble %s (its HTTPS endpoint is verified with the caBundle given to podtls)\n", env.DirectoryURL)
	return nil
}

// chartValues are the chart values a user would write: local images, and the ACME
// issuer pointing at Pebble with the rfc2136 provider on BIND when acme is not nil.
func chartValues(acme *acmetest.Env) map[string]any {
	image := func(ref string) map[string]any {
		repo, tag, _ := strings.Cut(ref, ":")
		return map[string]any{"repository": repo, "tag": tag, "pullPolicy": "Never"}
	}
	v := map[string]any{
		"image": map[string]any{"controller": image(ControllerImage), "sidecar": image(SidecarImage)},
	}
	if acme == nil {
		return v
	}
	cfg, _ := acme.RFC2136Config()
	v["acme"] = map[string]any{
		"enabled": true,
		"config": map[string]any{
			"directoryURL": acme.DirectoryURL,
			"email":        "demo@example.test",
			// Without a profile Pebble picks one at random (6-day or 90-day certificates).
			"profile":  "default",
			"caBundle": string(acme.ACMECABundle()),
			"dns": map[string]any{
				"provider":             "rfc2136",
				"credentialsSecretRef": map[string]any{"name": dnsCredentials},
				"config":               cfg,
				"recursiveNameservers": []string{acme.DNSAddr},
				// BIND listens on a high port; the authoritative check would dial port 53.
				"authoritativeNSCheck": false,
				"propagationTimeout":   "30s",
				"pollingInterval":      "500ms",
			},
			"allow": []any{map[string]any{"namespaces": []string{ns}, "hosts": []string{"*.demo.example.test"}}},
			// podtls publishes the address records of exposed external hosts too.
			"records": map[string]any{"enabled": true, "zone": "example.test", "ttl": 60,
				"credentialsSecretRef": map[string]any{"name": recordsCredentials}},
			// A first attempt that fails (the pod raced the DNS record) retries in
			// seconds, not after the production default of a minute.
			"renewal": map[string]any{"minBackoff": "5s"},
		},
	}
	return v
}

// helmInstall installs the chart with the helm binary of hack/helm.sh, run inside the
// node's namespace where the kubeconfig's server address exists.
func (r *run) helmInstall(ctx context.Context, dir string) error {
	helm := filepath.Join(r.opts.RepoRoot, "bin", "tools", "helm")
	if _, err := os.Stat(helm); err != nil {
		return fmt.Errorf("helm not found (run hack/helm.sh): %w", err)
	}
	if r.acme != nil {
		// The TSIG key goes into a Secret before the install, as a user would create it
		// (the chart only references it). Its value is not printed.
		if err := r.kubectl(ctx, "create", "namespace", systemNS); err != nil {
			return err
		}
		_, creds := r.acme.RFC2136Config()
		secret := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: dnsCredentials, Namespace: systemNS},
			StringData: creds,
		}
		if _, err := r.cs.CoreV1().Secrets(systemNS).Create(ctx, secret, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create secret %s: %w", dnsCredentials, err)
		}
		r.printf("    kubectl -n %s create secret generic %s --from-literal=RFC2136_TSIG_KEY=%s --from-literal=RFC2136_TSIG_SECRET=...\n",
			systemNS, dnsCredentials, creds["RFC2136_TSIG_KEY"])
		records := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: recordsCredentials, Namespace: systemNS},
			StringData: map[string]string{"RFC2136_TSIG_KEY": r.acme.RecordsKeyName, "RFC2136_TSIG_SECRET": r.acme.RecordsKeySecret},
		}
		if _, err := r.cs.CoreV1().Secrets(systemNS).Create(ctx, records, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create secret %s: %w", recordsCredentials, err)
		}
		r.printf("    kubectl -n %s create secret generic %s --from-literal=RFC2136_TSIG_KEY=%s --from-literal=RFC2136_TSIG_SECRET=...\n",
			systemNS, recordsCredentials, r.acme.RecordsKeyName)
	}
	values, err := json.MarshalIndent(chartValues(r.acme), "", "  ")
	if err != nil {
		return fmt.Errorf("encode values: %w", err)
	}
	valuesFile := filepath.Join(dir, "values.json")
	if err := os.WriteFile(valuesFile, values, 0o600); err != nil {
		return fmt.Errorf("write values: %w", err)
	}
	helmHome := filepath.Join(dir, "helm")
	args := []string{
		"HELM_CACHE_HOME=" + helmHome + "/cache", "HELM_CONFIG_HOME=" + helmHome + "/config", "HELM_DATA_HOME=" + helmHome + "/data",
		helm, "install", "podtls", filepath.Join(r.opts.RepoRoot, "charts", "podtls"),
		"--kubeconfig", r.c.Kubeconfig, "--namespace", systemNS, "--create-namespace",
		"--values", valuesFile, "--wait", "--timeout", waitDeployment.String(),
	}
	r.printf("    helm install podtls charts/podtls -n %s --create-namespace -f values.yaml --wait\n", systemNS)
	if r.acme != nil {
		r.printf("      (images localhost/podtls/*:demo; acme.config: Pebble %s, profile default, caBundle, rfc2136 on BIND %s)\n",
			r.acme.DirectoryURL, r.acme.DNSAddr)
	}
	out, err := r.c.Exec(ctx, "env", args...)
	r.printf("%s", indent(firstLines(string(out), 6)))
	if err != nil {
		return fmt.Errorf("helm install: %w", err)
	}
	return nil
}

// expose publishes customer's sidecar on the node, as a LoadBalancer would on a
// cloud, and asks podtls for the address record: public clients reach it at the
// node IP, which podtls publishes under customer's external host.
func (r *run) expose(ctx context.Context) error {
	if err := r.kubectl(ctx, "expose", "deployment", "customer", "-n", ns, "--name", publicService,
		"--type", "NodePort", "--port", "443", "--target-port", meshPort); err != nil {
		return err
	}
	t0 := time.Now()
	if err := r.kubectl(ctx, "annotate", "service", publicService, "-n", ns, contract.DNSRecords+"=nodes"); err != nil {
		return err
	}
	if err := r.waitRecord(ctx, t0); err != nil {
		return err
	}
	svc, err := r.cs.CoreV1().Services(ns).Get(ctx, publicService, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("get service %s: %w", publicService, err)
	}
	if len(svc.Spec.Ports) == 0 || svc.Spec.Ports[0].NodePort == 0 {
		return fmt.Errorf("service %s got no node port", publicService)
	}
	r.nodePort = strconv.Itoa(int(svc.Spec.Ports[0].NodePort))
	return nil
}

// waitRecord waits until BIND answers customer's name with the node's address,
// published by podtls, and shows dig's answer.
func (r *run) waitRecord(ctx context.Context, since time.Time) error {
	host, port, _ := net.SplitHostPort(r.acme.DNSAddr)
	args := []string{"@" + host, "-p", port, "+noall", "+answer", PublicHost, "A"}
	var out []byte
	err := poll(ctx, time.Minute, func() (bool, error) {
		var err error
		out, err = r.c.Exec(ctx, "dig", args...)
		return err == nil && strings.Contains(string(out), cluster.NodeIP), nil
	})
	if err != nil {
		return fmt.Errorf("podtls did not publish %s A %s on BIND (dig: %q): %w", PublicHost, cluster.NodeIP, out, err)
	}
	r.res.Record = strings.TrimSpace(string(out))
	r.printf("    dig %s\n%s", strings.Join(args, " "), indent(string(out)))
	r.printf("    podtls published %s A %s (the node) %s after the annotation\n", PublicHost, cluster.NodeIP, round(time.Since(since)))
	return nil
}

// externalSecret returns the Secret the ACME manager keeps customer's certificate in.
func (r *run) externalSecret(ctx context.Context) (*corev1.Secret, error) {
	return r.cs.CoreV1().Secrets(ns).Get(ctx, contract.ExternalSecretName([]string{PublicHost}), metav1.GetOptions{})
}

// waitIssued waits until the external Secret holds a certificate other than notSerial
// and returns its leaf serial (hex).
func (r *run) waitIssued(ctx context.Context, notSerial string) (string, error) {
	var serial, last string
	err := poll(ctx, waitIssued, func() (bool, error) {
		s, err := r.externalSecret(ctx)
		if err != nil {
			last = err.Error()
			return false, nil
		}
		if st, err := status.Decode(s.Annotations); err == nil && st.LastError != "" {
			last = "last error: " + st.LastError
		}
		leaf, err := firstCert(s.Data[corev1.TLSCertKey])
		if err != nil {
			return false, nil
		}
		serial = leaf.SerialNumber.Text(16)
		return serial != notSerial, nil
	})
	if err != nil {
		if ctx.Err() == nil {
			_ = r.kubectl(ctx, "get", "events", "-n", ns, "--field-selector", "involvedObject.kind=Pod")
			_ = r.kubectl(ctx, "logs", "-n", systemNS, "-l", "app.kubernetes.io/name=podtls", "--tail", "30", "--prefix")
		}
		return "", fmt.Errorf("no certificate for %s in Secret %s (%s): %w", PublicHost, contract.ExternalSecretName([]string{PublicHost}), last, err)
	}
	return serial, nil
}

// edge waits for the ACME certificate and calls customer like a browser would.
func (r *run) edge(ctx context.Context) error {
	if err := r.expose(ctx); err != nil {
		return err
	}
	name := contract.ExternalSecretName([]string{PublicHost})
	r.printf("    waiting for the ACME certificate (DNS-01 on BIND, issued by Pebble) in Secret %s/%s ...\n", ns, name)
	serial, err := r.waitIssued(ctx, "")
	if err != nil {
		return err
	}
	r.printf("    issued: serial %s (%s after the pod was created)\n", short(serial), round(time.Since(r.appliedAt)))
	r.showIssuance(ctx, status.EventIssued)
	roots, _, err := r.acme.Chain(ctx)
	if err != nil {
		return err
	}
	r.rootFile = filepath.Join(r.dir, "pebble-root.pem")
	if err := os.WriteFile(r.rootFile, roots, 0o644); err != nil {
		return fmt.Errorf("write Pebble root: %w", err)
	}
	url := "https://" + PublicHost + ":" + r.nodePort + "/"
	r.printf("    curl --cacert pebble-root.pem --resolve %s:%s:%s %s\n", PublicHost, r.nodePort, cluster.NodeIP, url)
	// The kubelet delivers the Secret update into the pod within seconds: retry until
	// the sidecar serves the certificate for this name.
	var out []byte
	err = poll(ctx, time.Minute, func() (bool, error) {
		out, err = r.curl(ctx, url)
		return err == nil, nil
	})
	if err != nil {
		return fmt.Errorf("curl %s: %s: %w", url, strings.TrimSpace(string(out)), err)
	}
	r.res.EdgeTrace = string(out)
	r.printf("%s", indent(string(out)))
	r.printf("    customer's sidecar answered with the ACME certificate (no client certificate asked: SNI %s is public);\n", PublicHost)
	r.printf("    the public call then went on over mTLS through preference and recommendation\n")
	cert, err := r.edgeCert(ctx, "-issuer", "-enddate", "-ext", "subjectAltName")
	if err != nil {
		return err
	}
	r.printf("    the certificate a client of %s gets (openssl s_client, verified against Pebble's root):\n%s", PublicHost, indent(indent(cert)))
	served, err := r.servedEdgeSerial(ctx)
	if err != nil {
		return err
	}
	r.res.EdgeRotation.Before = served
	return nil
}

// edgeCert runs openssl s_client against the public name, verifying the chain against
// Pebble's root, and prints fields of the served leaf with openssl x509.
func (r *run) edgeCert(ctx context.Context, x509Args ...string) (string, error) {
	script := `openssl s_client -connect "$1" -servername "$2" -CAfile "$3" -verify_return_error </dev/null 2>/dev/null | openssl x509 -noout ` +
		strings.Join(x509Args, " ")
	out, err := r.c.Exec(ctx, "sh", "-c", script, "sh", cluster.NodeIP+":"+r.nodePort, PublicHost, r.rootFile)
	if err != nil {
		return "", fmt.Errorf("openssl s_client -servername %s: %w", PublicHost, err)
	}
	return string(out), nil
}

func (r *run) curl(ctx context.Context, url string) ([]byte, error) {
	return r.c.Exec(ctx, "curl", "-sS", "--fail-with-body", "--max-time", "10",
		"--cacert", r.rootFile, "--resolve", PublicHost+":"+r.nodePort+":"+cluster.NodeIP, url)
}

// servedEdgeSerial asks openssl which certificate a client of the public name gets,
// verifying it against Pebble's root.
func (r *run) servedEdgeSerial(ctx context.Context) (string, error) {
	out, err := r.edgeCert(ctx, "-serial")
	if err != nil {
		return "", err
	}
	hex, ok := strings.CutPrefix(strings.TrimSpace(out), "serial=")
	n, valid := new(big.Int).SetString(hex, 16)
	if !ok || !valid {
		return "", fmt.Errorf("openssl s_client: unexpected output %q", out)
	}
	return n.Text(16), nil
}

// edgeRotation forces an ACME renewal the way a user would and waits until new
// handshakes get the new certificate.
func (r *run) edgeRotation(ctx context.Context) error {
	before := r.res.EdgeRotation.Before
	r.printf("    openssl s_client -servername %s: serial %s\n", PublicHost, short(before))
	t := time.Now()
	name := contract.ExternalSecretName([]string{PublicHost})
	if err := r.kubectl(ctx, "annotate", "secret", "-n", ns, name, status.ForceRenew+"="+strconv.FormatInt(time.Now().Unix(), 10)); err != nil {
		return err
	}
	stored, err := r.waitIssued(ctx, before)
	if err != nil {
		return err
	}
	r.printf("    the controller renewed it: Secret holds serial %s after %s\n", short(stored), round(time.Since(t)))
	r.showIssuance(ctx, status.EventRenewed)
	var served string
	if err := poll(ctx, time.Minute, func() (bool, error) {
		s, err := r.servedEdgeSerial(ctx)
		served = s
		return err == nil && s == stored, nil
	}); err != nil {
		return fmt.Errorf("customer still serves serial %s, Secret has %s: %w", served, stored, err)
	}
	r.res.EdgeRotation.After = served
	r.res.EdgeRotation.Took = time.Since(t)
	r.printf("    the kubelet delivered it into the pod and the sidecar swapped it: new handshakes get serial %s, %s after the annotation\n",
		short(served), round(r.res.EdgeRotation.Took))
	out, err := r.curl(ctx, "https://"+PublicHost+":"+r.nodePort+"/")
	if err != nil {
		return fmt.Errorf("curl after the renewal: %w", err)
	}
	r.printf("    curl again:\n%s", indent(string(out)))
	return nil
}

// showIssuance prints what a user sees with kubectl: the status annotations of the
// certificate's Secret and the Event with reason on the pod. Best effort: the demo
// only reads them.
func (r *run) showIssuance(ctx context.Context, reason string) {
	if s, err := r.externalSecret(ctx); err == nil {
		if st, err := status.Decode(s.Annotations); err == nil && st.Issued() {
			r.printf("    Secret annotations: %s=%s, %s=%s (%s)\n", status.NotAfter, st.NotAfter.UTC().Format(time.RFC3339),
				status.RenewAt, st.RenewAt.UTC().Format(time.RFC3339), st.RenewalSource)
		}
	}
	events, err := r.cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "reason=" + reason})
	if err != nil || len(events.Items) == 0 {
		return
	}
	e := events.Items[len(events.Items)-1]
	r.printf("    Event on pod %s: %s %s: %s\n", e.InvolvedObject.Name, e.Type, e.Reason, e.Message)
}

func firstCert(pemData []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(pemData)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("no certificate")
	}
	return x509.ParseCertificate(block.Bytes)
}

func firstLines(s string, n int) string {
	lines := strings.SplitAfter(s, "\n")
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, "")
}
