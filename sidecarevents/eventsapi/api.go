// Package eventsapi is the wire contract of POST /v1/events, by which a
// sidecar reports what happened in its pod that only it sees (app-owned
// certificate files it could not write, reload actions) and the controller
// records it as a Kubernetes Event on the pod. Standard library only: the
// sidecar imports it.
package eventsapi

// Path of the endpoint, on the CA's server (the same port and mesh-certificate
// authentication as endpoint discovery).
const Path = "/v1/events"

// MaxRequestBytes bounds a request body; MaxMessageBytes an Event's message
// (longer ones are cut).
const (
	MaxRequestBytes = 4 << 10
	MaxMessageBytes = 1024
)

// Reasons a sidecar may report; the controller refuses any other. The Event
// type follows from the reason.
const (
	ReasonAppCertsWriteFailed = "PodtlsAppCertsWriteFailed" // Warning
	ReasonAppReloaded         = "PodtlsAppReloaded"         // Normal
	ReasonAppReloadFailed     = "PodtlsAppReloadFailed"     // Warning
	ReasonPlaintextExposed    = "PodtlsPlaintextExposed"    // Warning: an app port behind the sidecar answers on the pod IP
)

// Warning reports whether reason is a Warning (else Normal) and known
// whether it is one of the reasons above.
func Warning(reason string) (warning, known bool) {
	switch reason {
	case ReasonAppCertsWriteFailed, ReasonAppReloadFailed, ReasonPlaintextExposed:
		return true, true
	case ReasonAppReloaded:
		return false, true
	}
	return false, false
}

// Request is the JSON body of POST Path. Pod must run in the namespace and
// under the service account of the caller's mesh certificate.
type Request struct {
	Pod     string `json:"pod"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
}
