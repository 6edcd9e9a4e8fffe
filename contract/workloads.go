package contract

import "time"

// ExternalWorkload labels the objects of a machine outside Kubernetes that
// joins the mesh (podtls workload register): its Service, EndpointSlice and
// one-time join Secret; the value is the workload's name.
const ExternalWorkload = Prefix + "external-workload"

// WorkloadServiceAccount, on a registered workload's Service, is the service
// account whose identity the machine gets.
const WorkloadServiceAccount = Prefix + "workload-service-account"

// WorkloadJoinSecretType is the type of a workload's one-time join Secret:
// the join token is bound to it, and the CA deletes it on first use.
const WorkloadJoinSecretType = "podtls.io/workload-join"

// WorkloadJoinSecretName is the join Secret of workload name.
func WorkloadJoinSecretName(name string) string { return "podtls-join-" + name }

// WorkloadCertificate is written by the controller on a registered
// workload's Service each time it issues the machine a certificate: a JSON
// WorkloadCertState.
const WorkloadCertificate = Prefix + "workload-certificate"

// WorkloadCertState is the value of WorkloadCertificate.
type WorkloadCertState struct {
	Serial   string    `json:"serial"`
	NotAfter time.Time `json:"notAfter"`
	Issued   time.Time `json:"issued"`
	Via      string    `json:"via"` // "join" or "renewal"
}
