package chart

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/podtls/podtls/acme/issuerconfig"
	"github.com/podtls/podtls/acme/providers"
	"github.com/podtls/podtls/e2e/mesh"
	"github.com/podtls/podtls/internal/gobuild"
	"github.com/podtls/podtls/internal/kubetest"
	webhookconfig "github.com/podtls/podtls/webhook/webhookconfig"
)

// env is one control plane shared by the tests that need an API server (nil when the
// binaries are missing or in -short mode; kubetest.Require then skips or fails).
var env *kubetest.Env

func TestMain(m *testing.M) {
	flag.Parse()
	if !testing.Short() {
		var err error
		env, err = kubetest.Launch()
		if err != nil && !errors.Is(err, kubetest.ErrAssetsMissing) {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	code := m.Run()
	if env != nil {
		if err := env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}
	os.Exit(code)
}

const systemNS = "podtls-system"

// valueSet is one way to install the chart.
type valueSet struct {
	name  string
	files []string // values files, relative to the repository root
	sets  []string // --set arguments
}

var valueSets = []valueSet{
	{name: "defaults"},
	{name: "acme-route53", files: []string{"manifests/examples/issuers/route53.yaml"}},
	{name: "acme-cloudflare", files: []string{"manifests/examples/issuers/cloudflare.yaml"}},
	{name: "acme-gcloud", files: []string{"manifests/examples/issuers/gcloud.yaml"}},
	{name: "acme-rfc2136", files: []string{"manifests/examples/issuers/rfc2136.yaml"}},
	{name: "acme-quickstart-credentials", files: []string{"manifests/examples/issuers/cloudflare.yaml"},
		sets: []string{"acme.dnsCredentials.create=true", "acme.dnsCredentials.stringData.CF_DNS_API_TOKEN=not-a-real-token"}},
	{name: "byo-ca", sets: []string{"ca.existingSecret=corp-intermediate"}},
	{name: "app-cert-password-check", sets: []string{"appCertificates.checkPasswordSecrets=true"}},
	{name: "ca-external", sets: []string{"ca.external.enabled=true", "ca.external.type=NodePort", "ca.external.nodePort=30443",
		"ca.external.names[0]=podtls-ca.example.com", "ca.external.names[1]=203.0.113.10"}},
	{name: "everything-else", sets: []string{
		"replicaCount=1", "webhook.failurePolicy=Ignore", "webhook.timeoutSeconds=10", "trustDomain=example.org",
		"clusterDomain=k8s.example.org", "logLevel=debug", "sidecar.mode=native", "sidecar.resources.cpuRequest=20m",
		"sidecar.resources.cpuLimit=1",
		"image.controller.tag=v9.9.9", "image.controller.pullPolicy=Always", "image.sidecar.repository=registry.example.org/podtls/sidecar",
		"imagePullSecrets[0].name=regcred", "extraArgs[0]=--shutdown-timeout=10s", "nodeSelector.kubernetes\\.io/os=linux",
		"tolerations[0].key=dedicated", "tolerations[0].operator=Exists", "tolerations[0].effect=NoSchedule",
		"podAnnotations.example\\.org/owner=platform", "podLabels.team=platform", "priorityClassName=system-cluster-critical",
		"serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=arn:aws:iam::123456789012:role/podtls",
		"affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].key=kubernetes.io/arch",
		"affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator=In",
		"affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].values[0]=amd64",
		"tests.namespace=podtls-test",
		"topologySpreadConstraints[0].maxSkew=1", "topologySpreadConstraints[0].topologyKey=topology.kubernetes.io/zone",
		"topologySpreadConstraints[0].whenUnsatisfiable=ScheduleAnyway",
		"topologySpreadConstraints[0].labelSelector.matchLabels.app\\.kubernetes\\.io/name=podtls",
	}},
}

func (v valueSet) args(root string) []string {
	var a []string
	for _, f := range v.files {
		a = append(a, "--values", filepath.Join(root, f))
	}
	for _, s := range v.sets {
		a = append(a, "--set", s)
	}
	return a
}

func repoRoot(t testing.TB) string {
	t.Helper()
	root, err := gobuild.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// helmBin is the repository's helm; missing, it skips the test (fails with
// PODTLS_REQUIRE_ENVTEST=1).
func helmBin(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(repoRoot(t), mesh.HelmPath)
	if fi, err := os.Stat(bin); err != nil || fi.Mode()&0o111 == 0 {
		msg := fmt.Sprintf("helm not found at %s: run `bash hack/helm.sh`", bin)
		if os.Getenv(kubetest.RequireEnv) != "" {
			t.Fatalf("%s (%s is set, so this is an error)", msg, kubetest.RequireEnv)
		}
		t.Skip(msg)
	}
	return bin
}

// helm runs helm with its caches in a temporary directory and returns stdout; stderr goes
// into the error.
func helm(t testing.TB, args ...string) (string, error) {
	t.Helper()
	bin := helmBin(t)
	dir := t.TempDir()
	cmd := exec.CommandContext(t.Context(), bin, args...)
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+filepath.Join(dir, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(dir, "config"), "HELM_DATA_HOME="+filepath.Join(dir, "data"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("helm %s: %w: %s%s", strings.Join(args, " "), err, stderr.String(), stdout.String())
	}
	return stdout.String(), nil
}

// render is `helm template` of the chart into namespace ns.
func render(t testing.TB, ns string, extra ...string) string {
	t.Helper()
	root := repoRoot(t)
	out, err := helm(t, append([]string{"template", "podtls", filepath.Join(root, "charts", "podtls"), "--namespace", ns,
		"--kube-version", mesh.KubeVersion()}, extra...)...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// object is one rendered document.
type object struct {
	Kind string
	Name string
	NS   string
	Raw  []byte // the document as JSON
}

func split(t testing.TB, manifest string) []object {
	t.Helper()
	var objs []object
	for _, doc := range strings.Split(manifest, "\n---\n") {
		if strings.TrimSpace(strings.Trim(doc, "-\n")) == "" {
			continue
		}
		js, err := yaml.YAMLToJSON([]byte(doc))
		if err != nil {
			t.Fatalf("rendered document is not YAML: %v\n%s", err, doc)
		}
		if string(js) == "null" {
			continue
		}
		var meta struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name      string `json:"name"`
				Namespace string `json:"namespace"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal(js, &meta); err != nil {
			t.Fatalf("decode metadata: %v", err)
		}
		objs = append(objs, object{Kind: meta.Kind, Name: meta.Metadata.Name, NS: meta.Metadata.Namespace, Raw: js})
	}
	return objs
}

func find(objs []object, kind, name string) (object, bool) {
	for _, o := range objs {
		if o.Kind == kind && o.Name == name {
			return o, true
		}
	}
	return object{}, false
}

// decode unmarshals the rendered object strictly (unknown fields are a chart bug).
func decode[T any](t testing.TB, objs []object, kind, name string) *T {
	t.Helper()
	o, ok := find(objs, kind, name)
	if !ok {
		t.Fatalf("no %s %s rendered", kind, name)
	}
	var v T
	if err := yaml.UnmarshalStrict(o.Raw, &v); err != nil {
		t.Fatalf("%s %s: %v", kind, name, err)
	}
	return &v
}

func TestLint(t *testing.T) {
	root := repoRoot(t)
	for _, vs := range valueSets {
		t.Run(vs.name, func(t *testing.T) {
			out, err := helm(t, append([]string{"lint", "--strict", filepath.Join(root, "charts", "podtls"),
				"--kube-version", mesh.KubeVersion()}, vs.args(root)...)...)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out, "0 chart(s) failed") || strings.Contains(out, "[WARNING]") || strings.Contains(out, "[ERROR]") {
				t.Errorf("helm lint:\n%s", out)
			}
		})
	}
}

// TestRender checks what each value set renders, object by object.
func TestRender(t *testing.T) {
	root := repoRoot(t)
	for _, vs := range valueSets {
		t.Run(vs.name, func(t *testing.T) {
			objs := split(t, render(t, systemNS, vs.args(root)...))
			dep := decode[appsv1.Deployment](t, objs, "Deployment", "podtls-controller")
			pod := dep.Spec.Template.Spec
			c := pod.Containers[0]
			acme := strings.HasPrefix(vs.name, "acme-")

			// Hardening that holds for every value set.
			if pod.SecurityContext == nil || pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot ||
				pod.SecurityContext.SeccompProfile == nil || pod.SecurityContext.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
				t.Errorf("pod securityContext %+v: want runAsNonRoot and seccomp RuntimeDefault", pod.SecurityContext)
			}
			sc := c.SecurityContext
			if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.AllowPrivilegeEscalation == nil ||
				*sc.AllowPrivilegeEscalation || sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
				t.Errorf("container securityContext %+v: want read-only root, no privilege escalation, drop ALL", sc)
			}
			if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" || c.LivenessProbe == nil || c.LivenessProbe.HTTPGet.Path != "/healthz" {
				t.Errorf("probes: readiness %+v liveness %+v", c.ReadinessProbe, c.LivenessProbe)
			}
			if c.Resources.Requests.Cpu().IsZero() || c.Resources.Limits.Memory().IsZero() {
				t.Errorf("resources %+v: want a CPU request and a memory limit", c.Resources)
			}
			if !slices.Contains(c.Args, "--leader-elect") {
				t.Errorf("args %v: want --leader-elect", c.Args)
			}
			hasArg := func(a string) bool { return slices.Contains(c.Args, a) }
			if got := hasArg("--acme-config=/etc/podtls/acme/config.yaml"); got != acme {
				t.Errorf("--acme-config in args: %v, want %v (%v)", got, acme, c.Args)
			}

			// ACME: the ConfigMap the controller and the podtls CLI read, accepted by the
			// controller's own parser, mounted as a directory (kubelet updates reach it).
			cm, hasCM := find(objs, "ConfigMap", "podtls-acme")
			if hasCM != acme {
				t.Fatalf("ConfigMap podtls-acme rendered: %v, want %v", hasCM, acme)
			}
			if acme {
				var m corev1.ConfigMap
				if err := yaml.UnmarshalStrict(cm.Raw, &m); err != nil {
					t.Fatal(err)
				}
				cfg, err := issuerconfig.Parse([]byte(m.Data["config.yaml"]), providers.Catalog)
				if err != nil {
					t.Errorf("the controller would refuse the rendered issuer configuration: %v\n%s", err, m.Data["config.yaml"])
				} else if cfg.DNS.Provider == "" {
					t.Errorf("no DNS provider in %s", m.Data["config.yaml"])
				}
				mounted := slices.ContainsFunc(c.VolumeMounts, func(v corev1.VolumeMount) bool {
					return v.MountPath == "/etc/podtls/acme" && v.SubPath == "" && v.ReadOnly
				})
				if !mounted {
					t.Errorf("podtls-acme not mounted read-only at /etc/podtls/acme without subPath: %+v", c.VolumeMounts)
				}
			}
			// Machines outside the cluster: the CA's port only, its names in the serving certificate.
			_, hasExt := find(objs, "Service", "podtls-controller-ca-external")
			if hasExt != (vs.name == "ca-external") {
				t.Errorf("external CA Service rendered: %v", hasExt)
			}
			if hasExt {
				svc := decode[corev1.Service](t, objs, "Service", "podtls-controller-ca-external")
				if svc.Spec.Type != corev1.ServiceTypeNodePort || len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].TargetPort.StrVal != "ca" || svc.Spec.Ports[0].NodePort != 30443 {
					t.Errorf("external CA Service %+v", svc.Spec)
				}
				if !hasArg("--ca-external-name=podtls-ca.example.com") || !hasArg("--ca-external-name=203.0.113.10") {
					t.Errorf("args %v: want --ca-external-name for each name", c.Args)
				}
			}
			_, hasCreds := find(objs, "Secret", "podtls-dns-credentials")
			if want := vs.name == "acme-quickstart-credentials"; hasCreds != want {
				t.Errorf("credentials Secret rendered: %v, want %v", hasCreds, want)
			}

			// RBAC: Secrets cluster-wide only with ACME, or "get" alone for the app-cert
			// password check when asked for; the CA Secret by name.
			cr := decode[rbacv1.ClusterRole](t, objs, "ClusterRole", "podtls-controller")
			secretsAnywhere := slices.ContainsFunc(cr.Rules, func(r rbacv1.PolicyRule) bool { return slices.Contains(r.Resources, "secrets") })
			pwCheck := vs.name == "app-cert-password-check"
			if secretsAnywhere != (acme || pwCheck) {
				t.Errorf("ClusterRole grants Secrets: %v, want %v (only with ACME or the password check)", secretsAnywhere, acme || pwCheck)
			}
			if pwCheck {
				for _, r := range cr.Rules {
					if slices.Contains(r.Resources, "secrets") && !slices.Equal(r.Verbs, []string{"get"}) {
						t.Errorf("the password check grants %v on Secrets, want get only", r.Verbs)
					}
				}
			}
			for _, r := range cr.Rules {
				if slices.Contains(r.Resources, "mutatingwebhookconfigurations") && !slices.Equal(r.ResourceNames, []string{"podtls"}) {
					t.Errorf("webhook configurations not limited to podtls: %+v", r)
				}
				if slices.Contains(r.Verbs, "*") || slices.Contains(r.Resources, "*") {
					t.Errorf("wildcard rule %+v", r)
				}
			}
			role := decode[rbacv1.Role](t, objs, "Role", "podtls-controller")
			caSecret := "podtls-ca"
			if vs.name == "byo-ca" {
				caSecret = "corp-intermediate"
				if !hasArg("--ca-secret=corp-intermediate") {
					t.Errorf("args %v: want --ca-secret=corp-intermediate", c.Args)
				}
			}
			for _, r := range role.Rules {
				if !slices.Contains(r.Resources, "secrets") {
					continue
				}
				if len(r.ResourceNames) > 0 && !slices.Equal(r.ResourceNames, []string{caSecret}) {
					t.Errorf("Role names Secrets %v, want [%s]", r.ResourceNames, caSecret)
				}
				if vs.name == "byo-ca" && (len(r.ResourceNames) == 0 || !slices.Equal(r.Verbs, []string{"get"})) {
					t.Errorf("with your own CA the controller only reads it; rule %+v", r)
				}
			}

			_, hasPDB := find(objs, "PodDisruptionBudget", "podtls-controller")
			if want := *dep.Spec.Replicas > 1; hasPDB != want {
				t.Errorf("PodDisruptionBudget rendered: %v with %d replicas", hasPDB, *dep.Spec.Replicas)
			}
			if vs.name == "defaults" {
				if *dep.Spec.Replicas != 2 {
					t.Errorf("default replicas %d, want 2", *dep.Spec.Replicas)
				}
				aa := pod.Affinity
				if aa == nil || aa.PodAntiAffinity == nil || len(aa.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution) != 1 ||
					aa.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution[0].PodAffinityTerm.TopologyKey != "kubernetes.io/hostname" {
					t.Errorf("default affinity %+v: want preferred anti-affinity by hostname", aa)
				}
				if !hasArg("--sidecar-image=ghcr.io/podtls/podtls-sidecar:" + chartVersion) {
					t.Errorf("args %v: want the sidecar image of the chart's appVersion", c.Args)
				}
			}
			if vs.name == "everything-else" {
				for _, a := range []string{"--trust-domain=example.org", "--cluster-domain=k8s.example.org", "--log-level=debug",
					"--sidecar-mode=native", "--sidecar-cpu-request=20m", "--sidecar-cpu-limit=1", "--shutdown-timeout=10s",
					"--sidecar-image=registry.example.org/podtls/sidecar:" + chartVersion} {
					if !hasArg(a) {
						t.Errorf("args %v: want %s", c.Args, a)
					}
				}
				if c.Image != "ghcr.io/podtls/podtls-controller:v9.9.9" || c.ImagePullPolicy != corev1.PullAlways {
					t.Errorf("image %s %s", c.Image, c.ImagePullPolicy)
				}
				if pod.PriorityClassName != "system-cluster-critical" || pod.NodeSelector["kubernetes.io/os"] != "linux" ||
					len(pod.Tolerations) != 1 || pod.Affinity.NodeAffinity == nil || pod.Affinity.PodAntiAffinity != nil ||
					dep.Spec.Template.Annotations["example.org/owner"] != "platform" || dep.Spec.Template.Labels["team"] != "platform" ||
					len(pod.ImagePullSecrets) != 1 || len(pod.TopologySpreadConstraints) != 1 {
					t.Errorf("scheduling and metadata values not applied: %+v", pod)
				}
				test := decode[corev1.Pod](t, objs, "Pod", "podtls-controller-test-injection")
				if test.Namespace != "podtls-test" {
					t.Errorf("test pod in %q, want podtls-test", test.Namespace)
				}
			}
		})
	}
}

// TestWebhookMatchesBuilder: the chart's MutatingWebhookConfiguration is the one
// webhook/webhookconfig builds (and renders into webhook/webhookconfig/webhook.yaml), so they cannot
// drift apart. Only the chart's own bookkeeping labels differ.
func TestWebhookMatchesBuilder(t *testing.T) {
	root := repoRoot(t)
	chartMWC := func(ns string, sets ...string) *admissionregistrationv1.MutatingWebhookConfiguration {
		var extra []string
		for _, s := range sets {
			extra = append(extra, "--set", s)
		}
		m := decode[admissionregistrationv1.MutatingWebhookConfiguration](t, split(t, render(t, ns, extra...)), "MutatingWebhookConfiguration", "podtls")
		for k := range m.Labels {
			if k != "app.kubernetes.io/name" && k != "app.kubernetes.io/component" {
				delete(m.Labels, k)
			}
		}
		return m
	}
	builder := func(ns string) *admissionregistrationv1.MutatingWebhookConfiguration {
		o := webhookconfig.DefaultOptions()
		o.Namespace = ns
		return webhookconfig.MutatingWebhookConfiguration(o)
	}

	t.Run("rendered webhook.yaml", func(t *testing.T) {
		data, err := os.ReadFile(filepath.Join(root, "webhook", "webhookconfig", "webhook.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		var want admissionregistrationv1.MutatingWebhookConfiguration
		if err := yaml.UnmarshalStrict(data, &want); err != nil {
			t.Fatal(err)
		}
		if got := chartMWC(systemNS); !equality.Semantic.DeepEqual(got, &want) {
			t.Errorf("chart and webhook/webhookconfig/webhook.yaml differ:\n%s", diffYAML(t, got, &want))
		}
	})
	for _, ns := range []string{systemNS, "security", "kube-system"} {
		t.Run("builder in "+ns, func(t *testing.T) {
			if got, want := chartMWC(ns), builder(ns); !equality.Semantic.DeepEqual(got, want) {
				t.Errorf("chart and webhook/webhookconfig differ:\n%s", diffYAML(t, got, want))
			}
		})
	}
	t.Run("failurePolicy value", func(t *testing.T) {
		got := chartMWC(systemNS, "webhook.failurePolicy=Ignore")
		want := builder(systemNS)
		want.Webhooks[0].FailurePolicy = got.Webhooks[0].FailurePolicy
		if *got.Webhooks[0].FailurePolicy != admissionregistrationv1.Ignore || !equality.Semantic.DeepEqual(got, want) {
			t.Errorf("webhook.failurePolicy=Ignore should change only the labelled-namespace webhook:\n%s", diffYAML(t, got, want))
		}
	})
}

func diffYAML(t testing.TB, got, want any) string {
	t.Helper()
	g, err := yaml.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	w, err := yaml.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	gl, wl := strings.Split(string(g), "\n"), strings.Split(string(w), "\n")
	var b strings.Builder
	for i := 0; i < max(len(gl), len(wl)); i++ {
		var a, c string
		if i < len(gl) {
			a = gl[i]
		}
		if i < len(wl) {
			c = wl[i]
		}
		if a != c {
			fmt.Fprintf(&b, "line %d: chart %q, want %q\n", i+1, a, c)
		}
	}
	return b.String()
}

// TestSchema: values.schema.json refuses what the controller or Kubernetes would refuse
// later, with a message naming the value.
func TestSchema(t *testing.T) {
	root := repoRoot(t)
	chart := filepath.Join(root, "charts", "podtls")
	for _, tt := range []struct {
		set  []string
		want string // in helm's error
	}{
		{[]string{"replicaCount=two"}, "/replicaCount"},
		{[]string{"replicaCount=0"}, "/replicaCount"},
		{[]string{"replicas=2"}, "replicas"},
		{[]string{"webhook.failurePolicy=Maybe"}, "/webhook/failurePolicy"},
		{[]string{"webhook.timeoutSeconds=60"}, "/webhook/timeoutSeconds"},
		{[]string{"sidecar.mode=sometimes"}, "/sidecar/mode"},
		{[]string{"sidecar.resources.memoryLimit=lots"}, "/sidecar/resources/memoryLimit"},
		{[]string{"sidecar.resources.cpuLimit=fast"}, "/sidecar/resources/cpuLimit"},
		{[]string{"sidecar.resources.cpuLimit=0"}, "/sidecar/resources/cpuLimit"},
		{[]string{"image.controller.pullPolicy=Sometimes"}, "/image/controller/pullPolicy"},
		{[]string{"logLevel=trace"}, "/logLevel"},
		{[]string{"trustDomain=Not A Domain"}, "/trustDomain"},
		{[]string{"ca.existingSecret=Bad_Name"}, "/ca/existingSecret"},
		{[]string{"tests.namespace=kube-system"}, "/tests/namespace"},
		{[]string{"acme.enabled=true"}, "/acme/config/dns/provider"},
		{[]string{"acme.config.directoryURL=ftp://example.com"}, "/acme/config/directoryURL"},
		{[]string{"acme.config.dns.provider=rfc2136", "acme.config.dns.credentials=x"}, "/acme/config/dns"},
		{[]string{"acme.config.renewal.lifetimeFraction=1.5"}, "/acme/config/renewal/lifetimeFraction"},
		{[]string{"acme.config.dns.propagationTimeout=soon"}, "/acme/config/dns/propagationTimeout"},
		{[]string{"acme.dnsCredentials.stringData.cf_token=x"}, "cf_token"},
		{[]string{"podDisruptionBudget.minAvailable=half"}, "/podDisruptionBudget/minAvailable"},
	} {
		t.Run(strings.Join(tt.set, ","), func(t *testing.T) {
			args := []string{"template", "podtls", chart, "--namespace", systemNS, "--kube-version", mesh.KubeVersion()}
			for _, s := range tt.set {
				args = append(args, "--set", s)
			}
			_, err := helm(t, args...)
			if err == nil {
				t.Fatalf("helm template accepted %v", tt.set)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error does not name %s: %v", tt.want, err)
			}
		})
	}
	// The schema is not stricter than the chart means to be.
	for _, set := range [][]string{
		{"podDisruptionBudget.minAvailable=50%"},
		{"acme.enabled=true", "acme.config.dns.provider=route53", "acme.config.dns.credentialsSecretRef=null"},
		{"ca.existingSecret=my-ca.v2"},
		{"extraArgs[0]=--webhook-url", "extraArgs[1]=https://10.0.0.1:9443"},
	} {
		t.Run("accepts "+strings.Join(set, ","), func(t *testing.T) {
			args := []string{"template", "podtls", chart, "--namespace", systemNS, "--kube-version", mesh.KubeVersion()}
			for _, s := range set {
				args = append(args, "--set", s)
			}
			if _, err := helm(t, args...); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestServerDryRun: every rendered object of every value set is accepted by the real API
// server (validation, defaulting, strict field checking), test pod included.
func TestServerDryRun(t *testing.T) {
	kubetest.Require(t, env)
	root := repoRoot(t)
	// The test pod runs in "default" under its "default" ServiceAccount, which the
	// controller-manager creates on a real cluster.
	if _, err := env.Clientset.CoreV1().ServiceAccounts("default").Get(t.Context(), "default", metav1.GetOptions{}); apierrors.IsNotFound(err) {
		env.CreateServiceAccount(t, "default", "default")
	}
	for i, vs := range valueSets {
		t.Run(vs.name, func(t *testing.T) {
			ns := fmt.Sprintf("dry-run-%d", i)
			env.CreateNamespace(t, ns, nil)
			manifest := render(t, ns, vs.args(root)...)
			if strings.Contains(manifest, "namespace: podtls-test") {
				if _, err := env.Clientset.CoreV1().Namespaces().Get(t.Context(), "podtls-test", metav1.GetOptions{}); apierrors.IsNotFound(err) {
					env.CreateNamespace(t, "podtls-test", nil)
				}
			}
			cmd := env.KubectlCommand(t.Context(), "apply", "--dry-run=server", "--validate=strict", "-f", "-")
			cmd.Stdin = strings.NewReader(manifest)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("kubectl apply --dry-run=server: %v\n%s", err, out)
			}
			n := len(split(t, manifest))
			if got := strings.Count(string(out), "(server dry run)"); got != n {
				t.Errorf("%d of %d objects accepted:\n%s", got, n, out)
			}
		})
	}
}

// TestHelmInstall installs, upgrades (turning ACME on) and uninstalls the chart with the
// real helm against the API server, through e2e/mesh's Install as the node suites do.
func TestHelmInstall(t *testing.T) {
	kubetest.Require(t, env)
	helmBin(t)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	cs := env.Clientset
	in := mesh.Install{
		ControllerImage: "registry.example.org/podtls/controller:t1",
		SidecarImage:    "registry.example.org/podtls/sidecar:t1",
		PullPolicy:      corev1.PullIfNotPresent,
		Replicas:        2,
		RepoRoot:        repoRoot(t),
	}
	t0 := time.Now()
	if err := in.Apply(ctx, cs); err != nil {
		t.Fatal(err)
	}
	t.Logf("helm upgrade --install took %s", time.Since(t0).Round(time.Millisecond))
	notes := func() string {
		t.Helper()
		out, err := in.Helm(ctx, cs, nil, "get", "notes", "podtls", "--namespace", systemNS)
		if err != nil {
			t.Fatal(err)
		}
		return string(out)
	}
	if n := notes(); !strings.Contains(n, "kubectl label namespace NAME podtls.io/inject=enabled") ||
		!strings.Contains(n, "helm test podtls -n podtls-system") || strings.Contains(n, "ACME is on") {
		t.Errorf("NOTES.txt after install:\n%s", n)
	}

	dep, err := cs.AppsV1().Deployments(systemNS).Get(ctx, "podtls-controller", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if c := dep.Spec.Template.Spec.Containers[0]; c.Image != in.ControllerImage ||
		!slices.Contains(c.Args, "--sidecar-image="+in.SidecarImage) || *dep.Spec.Replicas != 2 {
		t.Errorf("deployment image %s args %v replicas %d", c.Image, c.Args, *dep.Spec.Replicas)
	}
	can := func(attr authzv1.ResourceAttributes) bool {
		t.Helper()
		ok, err := in.Can(ctx, cs, attr)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	type attr = authzv1.ResourceAttributes
	rbac := []struct {
		attr          attr
		want, wantACM bool
	}{
		{attr{Verb: "create", Group: "authentication.k8s.io", Resource: "tokenreviews"}, true, true},
		{attr{Verb: "watch", Resource: "pods"}, true, true},
		{attr{Verb: "list", Group: "discovery.k8s.io", Resource: "endpointslices"}, true, true},
		{attr{Verb: "create", Group: "discovery.k8s.io", Resource: "endpointslices", Namespace: "demo"}, false, false},
		{attr{Verb: "watch", Group: "certificates.k8s.io", Resource: "podcertificaterequests"}, true, true},
		{attr{Verb: "update", Group: "certificates.k8s.io", Resource: "podcertificaterequests", Subresource: "status", Namespace: "demo"}, true, true},
		{attr{Verb: "update", Group: "certificates.k8s.io", Resource: "podcertificaterequests", Namespace: "demo"}, false, false},
		{attr{Verb: "sign", Group: "certificates.k8s.io", Resource: "signers", Name: "podtls.io/mesh"}, true, true},
		{attr{Verb: "attest", Group: "certificates.k8s.io", Resource: "signers", Name: "podtls.io/mesh"}, true, true},
		{attr{Verb: "sign", Group: "certificates.k8s.io", Resource: "signers", Name: "kubernetes.io/kube-apiserver-client"}, false, false},
		{attr{Verb: "create", Group: "certificates.k8s.io", Resource: "clustertrustbundles"}, true, true},
		{attr{Verb: "update", Resource: "configmaps", Namespace: "demo"}, true, true},
		{attr{Verb: "patch", Group: "admissionregistration.k8s.io", Resource: "mutatingwebhookconfigurations", Name: "podtls"}, true, true},
		{attr{Verb: "update", Group: "admissionregistration.k8s.io", Resource: "mutatingwebhookconfigurations", Name: "someone-else"}, false, false},
		{attr{Verb: "get", Resource: "secrets", Namespace: systemNS, Name: "podtls-ca"}, true, true},
		{attr{Verb: "get", Resource: "secrets", Namespace: systemNS, Name: "other"}, false, true},
		{attr{Verb: "list", Resource: "secrets"}, false, true},
		{attr{Verb: "create", Resource: "secrets", Namespace: "demo"}, false, true},
		{attr{Verb: "delete", Resource: "secrets", Namespace: "demo"}, false, true},
		{attr{Verb: "create", Resource: "pods", Namespace: "demo"}, false, false},
		{attr{Verb: "list", Resource: "nodes"}, false, true},
		{attr{Verb: "patch", Resource: "services", Namespace: "demo"}, false, true},
		{attr{Verb: "update", Resource: "services", Namespace: "demo"}, false, false},
		{attr{Verb: "delete", Resource: "services", Namespace: "demo"}, false, false},
		{attr{Verb: "delete", Resource: "configmaps", Namespace: "demo"}, false, false},
		{attr{Verb: "create", Group: "coordination.k8s.io", Resource: "leases", Namespace: "demo"}, false, false},
		{attr{Verb: "update", Group: "coordination.k8s.io", Resource: "leases", Namespace: systemNS, Name: "podtls-controller"}, true, true},
	}
	checkRBAC := func(acme bool) {
		t.Helper()
		for _, r := range rbac {
			want := r.want
			if acme {
				want = r.wantACM
			}
			// The authorizer's cache follows RBAC changes within moments.
			deadline := time.Now().Add(10 * time.Second)
			for can(r.attr) != want && time.Now().Before(deadline) {
				time.Sleep(100 * time.Millisecond)
			}
			if got := can(r.attr); got != want {
				t.Errorf("ACME %v: controller may %s %s/%s %q in %q: %v, want %v", acme, r.attr.Verb, r.attr.Group,
					r.attr.Resource, r.attr.Name, r.attr.Namespace, got, want)
			}
		}
	}
	checkRBAC(false)

	// What the controller does at start: write the caBundle. A helm upgrade must keep it.
	mwc, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "podtls", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	bundle := []byte("-----BEGIN CERTIFICATE-----\nnot checked by the API server\n-----END CERTIFICATE-----\n")
	for i := range mwc.Webhooks {
		mwc.Webhooks[i].ClientConfig.CABundle = bundle
	}
	if _, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Update(ctx, mwc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	// Upgrade: ACME on, with the credentials Secret created by the chart.
	in.ACME = map[string]any{
		"directoryURL": "https://acme.example.test/directory",
		"email":        "ops@example.org",
		"dns": map[string]any{
			"provider":             "rfc2136",
			"credentialsSecretRef": map[string]any{"name": "podtls-dns-credentials"},
			"config":               map[string]any{"RFC2136_NAMESERVER": "10.250.0.1:53", "RFC2136_TSIG_ALGORITHM": "hmac-sha256."},
			"propagationTimeout":   "30s",
		},
		"allow": []any{map[string]any{"namespaces": []any{"demo"}, "hosts": []any{"*.demo.example.test"}}},
	}
	in.ACMECredentials = map[string]string{"RFC2136_TSIG_KEY": "podtls", "RFC2136_TSIG_SECRET": "c2VjcmV0"}
	if err := in.Apply(ctx, cs); err != nil {
		t.Fatal(err)
	}
	if n := notes(); !strings.Contains(n, "ACME is on: https://acme.example.test/directory with DNS provider rfc2136") {
		t.Errorf("NOTES.txt after enabling ACME:\n%s", n)
	}
	cm, err := cs.CoreV1().ConfigMaps(systemNS).Get(ctx, "podtls-acme", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := issuerconfig.Parse([]byte(cm.Data["config.yaml"]), providers.Catalog)
	if err != nil {
		t.Fatalf("rendered ACME config: %v", err)
	}
	if cfg.DNS.Provider != "rfc2136" || cfg.DNS.PropagationTimeout.Duration != 30*time.Second || cfg.DNS.CredentialsSecretRef.Name != "podtls-dns-credentials" {
		t.Errorf("ACME config %+v", cfg)
	}
	creds, err := cs.CoreV1().Secrets(systemNS).Get(ctx, "podtls-dns-credentials", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if string(creds.Data["RFC2136_TSIG_SECRET"]) != "c2VjcmV0" {
		t.Errorf("credentials Secret data keys %v", slices.Collect(maps.Keys(creds.Data)))
	}
	dep, err = cs.AppsV1().Deployments(systemNS).Get(ctx, "podtls-controller", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(dep.Spec.Template.Spec.Containers[0].Args, "--acme-config=/etc/podtls/acme/config.yaml") {
		t.Errorf("after the upgrade: args %v", dep.Spec.Template.Spec.Containers[0].Args)
	}
	mwc, err = cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "podtls", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range mwc.Webhooks {
		if !bytes.Equal(w.ClientConfig.CABundle, bundle) {
			t.Errorf("helm upgrade dropped the caBundle the controller wrote into %s", w.Name)
		}
	}
	checkRBAC(true)

	// Uninstall removes what the chart created (the CA Secret, created by the controller,
	// stays: docs/install.md says how to remove it).
	if err := in.Uninstall(ctx, cs); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "podtls", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("webhook configuration after uninstall: %v", err)
	}
	if _, err := cs.RbacV1().ClusterRoles().Get(ctx, "podtls-controller", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("ClusterRole after uninstall: %v", err)
	}
	if _, err := cs.AppsV1().Deployments(systemNS).Get(ctx, "podtls-controller", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("Deployment after uninstall: %v", err)
	}
}

// TestInstallYAMLUpToDate: manifests/install.yaml is what hack/manifests.sh renders from
// the chart now (CI runs the same check; `make manifests` regenerates it).
func TestInstallYAMLUpToDate(t *testing.T) {
	helmBin(t)
	root := repoRoot(t)
	cmd := exec.CommandContext(t.Context(), "bash", filepath.Join(root, "hack", "manifests.sh"), "--check")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("manifests/install.yaml is stale (run `make manifests`): %v\n%s", err, out)
	}
}
