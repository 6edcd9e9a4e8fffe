// Package discoveryapi is the wire contract of endpoint discovery: the
// controller serves the ready endpoints of a Service at EndpointsPath on the
// CA's HTTPS port, and http-mode sidecars balance each request over them.
//
// A caller authenticates with its mesh certificate (mutual TLS; any SPIFFE
// identity of the trust domain). The request names the upstream exactly as
// the pod's podtls.io/upstreams annotation does:
//
//	GET /v1/endpoints?host=preference.demo.svc&port=8443&version=V&wait=30s
//
// host is NAME.NS.svc, NAME.NS.svc.CLUSTER-DOMAIN, NAME.NS or NAME (then NS is
// the caller's namespace, from its SPIFFE ID); case and a trailing dot do not
// matter. port is the Service port (a TCP port of the Service, 1-65535).
// version is optional (at most 64 bytes). wait is optional, a Go duration
// with its unit ("30s", "1m"; a bare number is malformed), at least 0,
// capped at MaxWait. Each parameter may appear once; unknown parameters are
// ignored.
//
// An answer is 200 with Endpoints; 404 with Error when the host is not a
// Service of this cluster with that port, or is an ExternalName Service (the
// sidecar then dials the host as given); 400 for malformed parameters; 401
// without a mesh certificate of the trust domain (a certificate that does not
// chain to the CA's roots is refused earlier, at the TLS handshake); 405 for
// a method other than GET; 429 (with Retry-After) when the caller holds too
// many waiting requests (the caller is one certificate, so one pod); 503
// (with Retry-After) when the controller cannot read its cache yet.
//
// Long polling: with version equal to the current Version and wait > 0, the
// server holds the request until the endpoint set changes or wait (at most
// MaxWait) elapses, then answers 200 with the current set either way (404 if
// the Service or its port went away). A controller shutting down answers
// waiting requests at once.
package discoveryapi

import "time"

// EndpointsPath is the discovery endpoint on the CA server.
const EndpointsPath = "/v1/endpoints"

// MaxWait bounds the wait parameter of a long poll.
const MaxWait = 60 * time.Second

// Endpoints is the 200 answer.
type Endpoints struct {
	// Version identifies this endpoint set (opaque; equal sets, equal
	// versions): send it back to wait for a change.
	Version string `json:"version"`
	// Service is NAME.NS.svc, Port the Service port asked for.
	Service string `json:"service"`
	Port    int32  `json:"port"`
	// Endpoints of the Service port, sorted by address (numerically), then
	// port: every endpoint of the Service's EndpointSlices that is ready or
	// serving, with its conditions, once per address and port; callers use
	// the ready ones and fall back to serving ones only when none is ready
	// (as kube-proxy does). Never null; empty when no endpoint qualifies.
	Endpoints []Endpoint `json:"endpoints"`
}

// Endpoint is one address of a Service port.
type Endpoint struct {
	// Address is an IP (v4 or v6), Port the target port on it.
	Address string `json:"address"`
	Port    int32  `json:"port"`
	// Pod is the name of the pod behind the address (targetRef), if any.
	Pod string `json:"pod,omitempty"`
	// Node is the node the endpoint runs on, if known.
	Node string `json:"node,omitempty"`
	// Ready, Serving and Terminating are the EndpointSlice conditions, as
	// the EndpointSlice API defines their absence: a nil ready counts as
	// true, a nil serving as the value of ready, a nil terminating as false.
	Ready       bool `json:"ready"`
	Serving     bool `json:"serving"`
	Terminating bool `json:"terminating"`
}

// Error is the body of every non-200 answer.
type Error struct {
	Error string `json:"error"`
}
