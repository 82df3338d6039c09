{{/*
Chart name, truncated at 63 characters (DNS label limit).
*/}}
{{- define "portcullis.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name, truncated at 63 characters. The release name is used as is when it
already contains the chart name.
*/}}
{{- define "portcullis.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "portcullis.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every object.
*/}}
{{- define "portcullis.labels" -}}
helm.sh/chart: {{ include "portcullis.chart" . }}
{{ include "portcullis.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels: immutable on a Deployment, so never add to them.
*/}}
{{- define "portcullis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "portcullis.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "portcullis.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "portcullis.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Image reference: a digest wins over a tag; the tag defaults to the chart's appVersion.
*/}}
{{- define "portcullis.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/*
Name of the ConfigMap holding the policy, and the key inside it.
*/}}
{{- define "portcullis.policyConfigMapName" -}}
{{- default (include "portcullis.fullname" .) .Values.policy.existingConfigMap }}
{{- end }}

{{- define "portcullis.policyKey" -}}
{{- if .Values.policy.existingConfigMap }}{{ .Values.policy.key }}{{ else }}policy.yaml{{ end }}
{{- end }}

{{/*
Directory the policy ConfigMap is mounted at. A directory mount (never subPath) so the kubelet's
atomic symlink swap reaches the running pod and Portcullis hot-reloads the new policy.
*/}}
{{- define "portcullis.policyDir" -}}
/etc/portcullis/policy
{{- end }}

{{/*
The policy text rendered into the chart's ConfigMap: policy.content as YAML text or as a map; when
empty, a policy that denies every request (fail closed until a real policy is supplied).
*/}}
{{- define "portcullis.policyContent" -}}
{{- $content := .Values.policy.content }}
{{- if kindIs "map" $content }}
{{- toYaml $content }}
{{- else if $content }}
{{- $content }}
{{- else -}}
# No policy was supplied (policy.content / policy.existingConfigMap): every request is denied.
version: 1
mode: enforce
default: deny
{{- end }}
{{- end }}

{{/*
Fully qualified in-cluster name of the gRPC service, as Istio's extensionProviders expects it.
*/}}
{{- define "portcullis.grpcHost" -}}
{{- printf "%s.%s.svc.%s" (include "portcullis.fullname" .) .Release.Namespace .Values.clusterDomain }}
{{- end }}

{{/*
One probe: the handler comes from `type` (grpc: grpc.health.v1 on the gRPC port; http: the given
path on the HTTP port), the timings are copied from the probe's values.
Usage: include "portcullis.probe" (dict "probe" .Values.probes.liveness "path" "/healthz" "root" $)
*/}}
{{- define "portcullis.probe" -}}
{{- $p := .probe }}
{{- /* The kubelet's gRPC probe speaks plaintext only: with tls.enabled it would fail forever (the
pod never Ready), so a gRPC probe becomes the HTTP one on the ops port, which stays plaintext. */}}
{{- if or (eq $p.type "http") .root.Values.tls.enabled }}
httpGet:
  path: {{ .path }}
  port: http
{{- else }}
grpc:
  port: {{ .root.Values.ports.grpc }}
  {{- with $p.grpcService }}
  service: {{ . | quote }}
  {{- end }}
{{- end }}
{{- range $k := list "initialDelaySeconds" "periodSeconds" "timeoutSeconds" "successThreshold" "failureThreshold" }}
{{- if hasKey $p $k }}
{{ $k }}: {{ get $p $k }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Labels of the `helm test` pod: distinct from the selector labels, so no Service, PDB or
NetworkPolicy of the release selects it.
*/}}
{{- define "portcullis.testSelectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-test" (include "portcullis.name" .) | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: test
{{- end }}

{{/*
A Portcullis duration flag value ("500ms", "10s", "10") in milliseconds.
*/}}
{{- define "portcullis.durationMs" -}}
{{- $d := toString . }}
{{- if hasSuffix "ms" $d }}{{ trimSuffix "ms" $d | int }}
{{- else if hasSuffix "s" $d }}{{ mul (trimSuffix "s" $d | int) 1000 }}
{{- else if hasSuffix "m" $d }}{{ mul (trimSuffix "m" $d | int) 60000 }}
{{- else if hasSuffix "h" $d }}{{ mul (trimSuffix "h" $d | int) 3600000 }}
{{- else }}{{ mul ($d | int) 1000 }}{{ end }}
{{- end }}

{{/* The Secret holding the gRPC port's certificate (tls.crt, tls.key, ca.crt). */}}
{{- define "portcullis.tlsSecretName" -}}
{{- default (printf "%s-tls" (include "portcullis.fullname" .)) .Values.tls.secretName -}}
{{- end }}
