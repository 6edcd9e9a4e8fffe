{{/*
Fixed names: the controller finds its Service, webhook configuration, CA Secret and lease by
these names (its flag defaults), the podtls CLI reads ConfigMap podtls-acme, and the RBAC
resourceNames below must match them. One release per cluster.
*/}}
{{- define "podtls.name" -}}podtls-controller{{- end }}
{{- define "podtls.webhookName" -}}podtls{{- end }}
{{- define "podtls.acmeConfigMap" -}}podtls-acme{{- end }}
{{- define "podtls.acmeConfigPath" -}}/etc/podtls/acme/config.yaml{{- end }}

{{- define "podtls.caSecret" -}}
{{- .Values.ca.existingSecret | default "podtls-ca" -}}
{{- end }}

{{- define "podtls.controllerImage" -}}
{{- printf "%s:%s" .Values.image.controller.repository (.Values.image.controller.tag | default .Chart.AppVersion) -}}
{{- end }}

{{- define "podtls.sidecarImage" -}}
{{- printf "%s:%s" .Values.image.sidecar.repository (.Values.image.sidecar.tag | default .Chart.AppVersion) -}}
{{- end }}

{{/* Selector labels: stable across upgrades (a Deployment's selector is immutable). */}}
{{- define "podtls.selectorLabels" -}}
app.kubernetes.io/name: podtls
app.kubernetes.io/component: controller
{{- end }}

{{- define "podtls.labels" -}}
{{ include "podtls.selectorLabels" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{/* Namespaces the webhook never sees: the system ones and the controller's own. */}}
{{- define "podtls.excludedNamespaces" -}}
{{- $ns := list "kube-system" "kube-public" "kube-node-lease" -}}
{{- if not (has .Release.Namespace $ns) }}{{ $ns = append $ns .Release.Namespace }}{{ end -}}
{{- toYaml $ns -}}
{{- end }}
