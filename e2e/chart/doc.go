// Package chart tests charts/podtls with the real helm (hack/helm.sh) and a real
// kube-apiserver (envtest, internal/kubetest): lint, rendering with several value sets, the
// strict values schema, server-side validation of every rendered object, a real
// `helm install` / `upgrade` / `uninstall`, the webhook configuration against
// webhook/webhookconfig's builder, and manifests/install.yaml against the chart.
//
// Tests skip when helm or the envtest binaries are missing, and fail instead with
// PODTLS_REQUIRE_ENVTEST=1:
//
//	bash hack/helm.sh && bash hack/k8s-binaries.sh
//	PODTLS_REQUIRE_ENVTEST=1 go test -count=1 ./e2e/chart/
package chart
