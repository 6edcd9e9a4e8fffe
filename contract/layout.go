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
	TrustBundleKey       = "ca.crt"

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
