// Package contract is the pod contract of podtls: every label and annotation
// key it reads or writes (keys.go; all share the prefix "podtls.io/"), the pod
// layout the webhook renders and the sidecar reads (layout.go), and Parse,
// which turns a pod's annotations into a typed Spec (spec.go). The webhook,
// the ACME manager, the sidecar and the CLI import it; it imports none of
// them. The namespace label sets the default; a pod annotation always wins.
//
// docs/annotations.md is the user-facing version of this package: keep them
// in step (TestKeysDocumented checks).
package contract

// Prefix is the common prefix of every podtls key.
const Prefix = "podtls.io/"

// Inject is both a namespace label and a pod annotation.
//
// As a namespace label the values are "enabled" and "disabled". As a pod annotation
// the values are "true" and "false". A pod annotation overrides the namespace label.
const Inject = Prefix + "inject"

// Values of the Inject namespace label and pod annotation.
const (
	NamespaceEnabled  = "enabled"
	NamespaceDisabled = "disabled"
	PodEnabled        = "true"
	PodDisabled       = "false"
)

// Inbound lists the ports the sidecar terminates TLS on and the local app port
// it forwards to, comma-separated: "8443:8080,9443:9090". The sidecar listens on
// every interface of the pod at the first port and dials 127.0.0.1 at the second.
const Inbound = Prefix + "inbound"

// Upstreams lists the services the app calls through the sidecar, comma-separated:
// "[tls://]HOST:PORT@LOCALPORT[/PROTOCOL][#SPIFFE-ID]", e.g. "preference.demo.svc:8443@9001". The app
// talks plaintext to 127.0.0.1:LOCALPORT and the sidecar dials HOST:PORT with mTLS,
// per connection (PROTOCOL tcp, the tcp mode's default) or per HTTP request over the
// Service's endpoints (http, the http mode's default),
// verifying the DNS name and, when given, the exact SPIFFE ID of the upstream. HOST
// must be a cluster name (InCluster) unless the entry pins a SPIFFE ID. With
// "tls://" HOST is a service outside the mesh: TLS without a client certificate,
// verified with the system roots.
const Upstreams = Prefix + "upstreams"

// ExternalHosts lists public DNS names (wildcards allowed) that get an ACME
// certificate, comma-separated. The certificate lives in a Secret named
// podtls-ext-<hash of the sorted host set> in the pod's namespace, mounted
// optionally and served by SNI on the inbound ports.
const ExternalHosts = Prefix + "external-hosts"

// Allow lists the SPIFFE IDs allowed to call this pod, comma-separated: exact IDs
// or prefixes ending in "/*". Default: any identity of the trust domain.
const Allow = Prefix + "allow"

// DNSNames lists extra DNS SANs for the mesh certificate, comma-separated. Each must
// be a Service name of the pod's own namespace: NAME.NS.svc[.CLUSTER-DOMAIN].
const DNSNames = Prefix + "dns-names"

// Mode is "tcp" (default, L4) or "http" (HTTP-aware: X-Forwarded-*, client identity header).
const Mode = Prefix + "mode"

// Redirect opens a plaintext HTTP port that sends clients to https:
// "PORT[:HTTPS-PORT]", e.g. "8080:443". The sidecar listens on PORT on every
// interface and answers every request with 308 Permanent Redirect to
// https://HOST[:HTTPS-PORT]/path?query when HOST is one of ExternalHosts
// (wildcards match one label), and with 421 Misdirected Request otherwise.
// HTTPS-PORT defaults to the first Inbound LISTEN port and is left out of
// the URL when it is 443. Needs ExternalHosts and Inbound.
const Redirect = Prefix + "redirect"

// TrustedProxies lists the CIDRs (or IP addresses) of proxies in front of
// the pod, comma-separated: in http mode a request from one of them keeps its
// X-Forwarded-For, with the peer appended; from any other peer the header is
// replaced by the peer's address.
const TrustedProxies = Prefix + "trusted-proxies"

// ProxyProtocol lists Inbound LISTEN ports, comma-separated, whose
// connections must start with a PROXY protocol v2 header (a load balancer's
// "send-proxy-v2"); the header's source address is then the client's.
// Connections without one are refused.
const ProxyProtocol = Prefix + "proxy-protocol"

// CertTTL is the lifetime requested for the mesh certificate, a Go duration
// within [1h, 168h] (the CA's policy clamps it again). Default: the CA's default.
const CertTTL = Prefix + "cert-ttl"

// IdleTimeout closes a proxied connection after this long without bytes in
// either direction: a Go duration within [1s, 168h]. Default 1h (the
// sidecar's --idle-timeout). Raise it for pooled database connections that
// sit idle longer.
const IdleTimeout = Prefix + "idle-timeout"

// DrainTimeout is how long open connections may finish once the sidecar is
// told to stop: a Go duration within [1s, 1h]. Default 20s (the sidecar's
// --drain-timeout). In legacy placement it also bounds the sidecar's preStop
// hook, which waits for the app's connections to end before the sidecar
// stops. Keep it below the pod's terminationGracePeriodSeconds.
const DrainTimeout = Prefix + "drain-timeout"

// SidecarCPURequest, SidecarCPULimit, SidecarMemoryRequest and
// SidecarMemoryLimit override the controller's defaults for this pod's
// sidecar container (--sidecar-cpu-request, --sidecar-cpu-limit,
// --sidecar-memory-request, --sidecar-memory-limit): Kubernetes quantities
// such as "50m", "1" or "128Mi". The webhook refuses a request above its
// limit and a memory limit below MinMemoryLimit. Unless MaxConnections is set,
// the sidecar's connection limit follows the memory limit (MaxConnectionsFor).
const (
	SidecarCPURequest    = Prefix + "sidecar-cpu-request"
	SidecarCPULimit      = Prefix + "sidecar-cpu-limit"
	SidecarMemoryRequest = Prefix + "sidecar-memory-request"
	SidecarMemoryLimit   = Prefix + "sidecar-memory-limit"
)

// MaxConnections caps the connections the sidecar holds open over all its
// listeners; more are closed at accept and counted. A positive integer.
// Default: MaxConnectionsFor(the sidecar's memory limit). The webhook refuses
// a value the memory limit cannot hold even idle, and warns above the default.
const MaxConnections = Prefix + "max-connections"

// SidecarMode forces how the sidecar is injected: "native" (an init container with
// restartPolicy Always, Kubernetes >= 1.29) or "legacy" (a regular container placed
// first, with a postStart hook holding the app until the sidecar is ready).
// Default: the controller's --sidecar-mode, which by default follows the API server version.
const SidecarMode = Prefix + "sidecar-mode"

// Placement is a value of SidecarMode: how the sidecar container is placed in
// the pod.
type Placement string

// Values of SidecarMode. Native needs Kubernetes >= 1.29.
const (
	SidecarModeNative Placement = "native"
	SidecarModeLegacy Placement = "legacy"
)

// RewriteProbes is "true" (the default) or "false". With it, the webhook points the
// HTTP, TCP and gRPC probes of the app containers at the sidecar's admin port, which
// runs each one against the app on loopback and answers with the app's result: the app
// can listen on 127.0.0.1 only (so nothing bypasses mTLS) and keep its probes. "false"
// leaves the probes as written.
const RewriteProbes = Prefix + "rewrite-probes"

// AccessLog is "true" or "false" (the default). With "true" the sidecar writes an
// access log to its stdout (podtls-sidecar --access-log): one JSON line per HTTP
// request in http mode (method, authority, path without the query string, status,
// duration, bytes, peer SPIFFE ID) and one per connection in tcp mode, at its
// close. Headers, cookies, query strings and bodies are never logged.
const AccessLog = Prefix + "access-log"

// Identity is where the pod's mesh certificate comes from: "agent" (the
// sidecar creates its key and asks the CA's sign API with a projected
// service-account token), "podCertificate" (the kubelet creates the key and
// gets the certificate from podtls's PodCertificateRequest signer, Kubernetes
// >= 1.37) or "auto" (the controller's --identity-source). A pod annotation
// only: the namespace label does not carry it.
const Identity = Prefix + "identity"

// Values of Identity.
const (
	IdentityAuto           = "auto"
	IdentityAgent          = "agent"
	IdentityPodCertificate = "podCertificate"
)

// AppProbes is written by the webhook on pods whose probes it rewrote: a JSON object
// holding each rewritten probe's original handler by container and probe kind, so
// uninjection restores them exactly. The sidecar reads the resolved form from its
// EnvAppProbes variable instead.
const AppProbes = Prefix + "app-probes"

// Status is written by the webhook onto every injected pod: a small JSON object
// with the controller version, sidecar mode and a hash of what was injected.
// Its presence together with the sidecar container makes re-invocation a no-op.
const Status = Prefix + "status"

// ExternalSecret is written by the webhook on pods with ExternalHosts: the name of
// the Secret the ACME manager must create for that host set.
const ExternalSecret = Prefix + "external-secret"

// DefaultContainer is the well-known kubectl annotation naming the container that
// "kubectl logs/exec" pick by default. The webhook sets it in legacy mode, where the
// sidecar would otherwise be the first container.
const DefaultContainer = "kubectl.kubernetes.io/default-container"

// Labels on every object podtls-controller owns: the trust-bundle ConfigMaps,
// the external-certificate and ACME-account Secrets. The controller's caches
// select on them; a same-named object without them is adopted, never trusted.
const (
	ManagedByLabel = "app.kubernetes.io/managed-by"
	ManagedByValue = "podtls-controller"
	ComponentLabel = Prefix + "component"
)

// CAGenerated is set on the CA Secret when podtls-controller generated the CA
// itself (as opposed to a CA the user provided).
const CAGenerated = Prefix + "ca-generated"

// EventNotInjected is the reason of the Warning Event the controller's
// injection audit puts on a pod that asked for podtls but runs without its
// sidecar. Events are part of the pod contract: `podtls status` lists them.
const EventNotInjected = "PodtlsNotInjected"

// AppCerts turns on app-owned TLS: the absolute PATH at which the pod's
// certificates appear, read-only, in every app container (regular
// containers, and init containers in native placement). The sidecar writes them there and keeps them current, one
// directory per source ("mesh", "external"), each updated in one atomic
// swap. A pod may set AppCerts without any listener: the sidecar then only
// delivers files.
const AppCerts = Prefix + "app-certs"

// AppCertSources lists which certificates are delivered, comma-separated:
// "mesh" (the pod's SPIFFE identity, with the mesh roots as trust store)
// and "external" (the ACME certificate of ExternalHosts). Default: mesh, and
// external when the pod has ExternalHosts.
const AppCertSources = Prefix + "app-cert-sources"

// AppCertFormats lists the file formats, comma-separated: "pem" (tls.crt,
// tls.key, ca.crt, combined.pem), "pkcs12" (keystore.p12, truststore.p12) and
// "jks" (keystore.jks, truststore.jks). Default: pem.
const AppCertFormats = Prefix + "app-cert-formats"

// AppCertPassword names the Secret (in the pod's namespace) holding the
// password of the PKCS#12 and JKS stores: "NAME" (key "password") or
// "NAME/KEY". Without it the sidecar generates a password once per pod and
// writes it beside the stores as "store.password".
const AppCertPassword = Prefix + "app-cert-password"

// AppCertPKCS12 is the PKCS#12 encryption: "modern" (the default: AES-256-CBC
// with PBKDF2-HMAC-SHA-256, Java >= 8u301, OpenSSL >= 1.1.1) or "legacy"
// (3DES and RC2 with SHA-1, for old JVMs and OpenSSL 1.0).
const AppCertPKCS12 = Prefix + "app-cert-pkcs12"

// AppCertReload is what happens after the files changed while the app runs:
// "none" (the default: the app re-reads them itself), "signal[:SIGNAL[:PROCESS]]"
// (the sidecar sends SIGNAL, default SIGHUP, to the main process of the app
// containers, or to those named PROCESS; the pod gets a shared process
// namespace), "http:PORT[/PATH]" (the sidecar POSTs to
// http://127.0.0.1:PORT/PATH), or "restart" (the controller rolls the
// owning Deployment, StatefulSet or DaemonSet, one workload at a time;
// external certificates only).
const AppCertReload = Prefix + "app-cert-reload"

// RestartedFor is written by the controller into the pod template of a
// Deployment, StatefulSet or DaemonSet it rolled for AppCertReload
// "restart": the serial of the external certificate the new pods start
// with. Changing the template is the restart; the value makes it happen
// once per certificate.
const RestartedFor = Prefix + "restarted-for"

// DNSRecords, on a Service, publishes address records for the external
// hosts (ExternalHosts) of the pods the Service selects: "true" points them at the Service's load balancer (A/AAAA for
// its IPs, CNAME for its hostname), "nodes" at the nodes' addresses (for
// NodePort), and a comma-separated list of IP addresses or one hostname at
// those. Needs records enabled in the issuer configuration.
const DNSRecords = Prefix + "dns-records"
