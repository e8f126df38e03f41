{{/*
Naming. The full name is the release name (one release per ztml deployment), so the ztml
runtime can compute the Service DNS name without rendering: <release>.<namespace>.svc.
*/}}
{{- define "ztml-inference.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ztml-inference.fullname" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ztml-inference.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
A value made safe for a label: label syntax allows [A-Za-z0-9._-], at most 63 characters,
starting and ending with an alphanumeric. The verbatim value goes into an annotation.
*/}}
{{- define "ztml-inference.labelValue" -}}
{{- $v := regexReplaceAll "[^A-Za-z0-9._-]" (toString .) "-" | trunc 63 -}}
{{- $v = regexReplaceAll "^[^A-Za-z0-9]+|[^A-Za-z0-9]+$" $v "" -}}
{{- default "unknown" $v -}}
{{- end }}

{{- define "ztml-inference.environment" -}}
{{- default .Values.preset .Values.environment }}
{{- end }}

{{- define "ztml-inference.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ztml-inference.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels on every object; the deployment policy requires them. */}}
{{- define "ztml-inference.labels" -}}
helm.sh/chart: {{ include "ztml-inference.chart" . }}
{{ include "ztml-inference.selectorLabels" . }}
app.kubernetes.io/version: {{ include "ztml-inference.labelValue" (default .Chart.AppVersion .Values.model.version) | quote }}
app.kubernetes.io/component: inference
app.kubernetes.io/part-of: ztml
app.kubernetes.io/managed-by: {{ .Release.Service }}
ztml.io/model: {{ include "ztml-inference.labelValue" (default "unknown" .Values.model.name) | quote }}
ztml.io/model-version: {{ include "ztml-inference.labelValue" (default "unknown" .Values.model.version) | quote }}
ztml.io/environment: {{ include "ztml-inference.labelValue" (include "ztml-inference.environment" .) | quote }}
{{- end }}

{{/* Verbatim model facts (label values are sanitised; these are not). */}}
{{- define "ztml-inference.annotations" -}}
ztml.io/model-name: {{ .Values.model.name | quote }}
ztml.io/model-version: {{ .Values.model.version | quote }}
{{- with .Values.model.registryUri }}
ztml.io/model-uri: {{ . | quote }}
{{- end }}
{{- with .Values.model.runId }}
ztml.io/run-id: {{ . | quote }}
{{- end }}
{{- with .Values.model.fingerprint }}
ztml.io/fingerprint: {{ . | quote }}
{{- end }}
{{- end }}

{{- define "ztml-inference.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ztml-inference.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository@digest when a digest is given (it wins), else repository:tag. */}}
{{- define "ztml-inference.image" -}}
{{- $repo := required "image.repository is required" .Values.image.repository -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" $repo .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (default .Chart.AppVersion .Values.image.tag | toString) -}}
{{- end -}}
{{- end }}

{{/*
The effective sizing: explicit values win over the preset. Returned as YAML; use with
`include "ztml-inference.effective" . | fromYaml`.
  replicaCount, resources, minReplicas, maxReplicas, pdb (minAvailable or maxUnavailable)
*/}}
{{- define "ztml-inference.effective" -}}
{{- $preset := get .Values.presets .Values.preset -}}
{{- if not $preset -}}
{{- fail (printf "preset %q is not defined under presets (known: %s)" .Values.preset (keys .Values.presets | sortAlpha | join ", ")) -}}
{{- end -}}
{{- $replicas := int (default $preset.replicaCount .Values.replicaCount) -}}
{{- $resources := deepCopy (default $preset.resources .Values.resources) -}}
{{- if .Values.gpu.enabled -}}
{{- $limits := default dict $resources.limits -}}
{{- $_ := set $limits .Values.gpu.resourceName (int .Values.gpu.count) -}}
{{- $_ := set $resources "limits" $limits -}}
{{- end -}}
{{- $min := int (default (default $preset.autoscaling.minReplicas .Values.replicaCount) .Values.autoscaling.minReplicas) -}}
{{- $max := int (default (max $min $preset.autoscaling.maxReplicas) .Values.autoscaling.maxReplicas) -}}
{{- if lt $max $min -}}
{{- fail (printf "autoscaling.maxReplicas (%d) is below autoscaling.minReplicas (%d)" $max $min) -}}
{{- end -}}
{{- $pdb := dict -}}
{{- if not (kindIs "invalid" .Values.podDisruptionBudget.minAvailable) -}}
{{- $_ := set $pdb "minAvailable" .Values.podDisruptionBudget.minAvailable -}}
{{- else if not (kindIs "invalid" .Values.podDisruptionBudget.maxUnavailable) -}}
{{- $_ := set $pdb "maxUnavailable" .Values.podDisruptionBudget.maxUnavailable -}}
{{- else -}}
{{- $pdb = $preset.podDisruptionBudget -}}
{{- end -}}
replicaCount: {{ $replicas }}
minReplicas: {{ $min }}
maxReplicas: {{ $max }}
resources: {{ toJson $resources }}
pdb: {{ toJson $pdb }}
{{- end }}
