package contract

// Names and paths of the pod layout the webhook renders and the sidecar reads. The sidecar and the docs
// rely on them; changing one is a breaking change.
const (
	ContainerName = "podtls-sidecar"

	CertsVolume          = "podtls-certs"
	TrustVolume          = "podtls-trust"
	TokenVolume          = "podtls-token"
	CertsDir             = "/var/run/podtls/certs"
	TrustDir             = "/var/run/podtls/trust"
	TrustFile            = TrustDir + "/ca.crt"
	TokenDir             = "/var/run/secrets/podtls/token"
	TokenFile            = TokenDir + "/token"
	ExternalDir          = "/var/run/podtls/external"
	TrustBundleConfigMap = "podtls-trust-bundle"

	// App-owned certificates (AppCerts): the sidecar writes into
	// AppCertsDir, the app containers mount the same volume at the
	// annotation's path; the stores' password Secret is mounted into the
	// sidecar alone.
	AppCertsVolume    = "podtls-app-certs"
	AppCertsDir       = "/var/run/podtls/app"
	AppPasswordVolume = "podtls-app-password"
	AppPasswordDir    = "/var/run/podtls/app-password"
	AppPasswordFile   = AppPasswordDir + "/password"
	TrustBundleKey    = "ca.crt"

	// TokenExpirationSeconds is the lifetime of the projected token; kubelet
	// refreshes it at 80 %.
	TokenExpirationSeconds = 3600

	AdminPort = 15000

	// EnvTrustRoots carries the current roots PEM so a pod can verify the CA
	// before the trust-bundle ConfigMap reaches its namespace.
	EnvTrustRoots = "PODTLS_TRUST_ROOTS"

	// EnvPodIP and EnvPodIPs carry the pod's IP and, on dual-stack pods, its
	// IPs comma-separated (downward API status.podIP, status.podIPs). The
	// sidecar checks that the app's plaintext ports are not reachable there.
	EnvPodIP  = "POD_IP"
	EnvPodIPs = "POD_IPS"
)

// SystemNamespaces never get a sidecar, whatever their labels say.
var SystemNamespaces = []string{"kube-system", "kube-public", "kube-node-lease"}

// Pod certificates (Kubernetes 1.37 PodCertificateRequest and
// ClusterTrustBundle): the signer podtls-controller runs and how its roots
// are published. Pods mount them with a podCertificate and a
// clusterTrustBundle projection.
const (
	// SignerName is the signer of mesh certificates.
	SignerName = "podtls.io/mesh"
	// TrustBundleLabel labels the ClusterTrustBundles of SignerName, one per
	// root (names "podtls.io:mesh:<16 hex digits of the root's SHA-256>");
	// a projection selects them with TrustBundleLabel=TrustBundleLabelValue.
	TrustBundleLabel      = "podtls.io/trust-bundle"
	TrustBundleLabelValue = "mesh"
	// CredentialBundleFile is the podCertificate projection's single file:
	// the PKCS#8 key, then the chain (kubelet writes both in one swap).
	CredentialBundleFile = "credentials.pem"
)
