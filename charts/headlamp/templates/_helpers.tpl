{{/* Release name, cut to the 63 characters a label value allows. */}}
{{- define "headlamp.name" -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "headlamp.selectorLabels" -}}
app.kubernetes.io/name: headlamp
app.kubernetes.io/instance: {{ .Release.Name | quote }}
{{- end -}}

{{- define "headlamp.labels" -}}
{{ include "headlamp.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: kiln
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | quote }}
{{- end -}}
