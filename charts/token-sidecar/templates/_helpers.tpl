{{/*
Names and labels. Every template here takes the token-sidecar chart's own
scope: "." inside this chart, (index .Subcharts "token-sidecar") from a
parent chart.
*/}}

{{- define "token-sidecar.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Full name: release-chart, or the release name alone when it already holds the
chart name. Truncated to 50 so suffixes such as -example and -metrics fit in 63.
*/}}
{{- define "token-sidecar.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "token-sidecar.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "token-sidecar.selectorLabels" -}}
app.kubernetes.io/name: {{ include "token-sidecar.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "token-sidecar.labels" -}}
helm.sh/chart: {{ include "token-sidecar.chart" . }}
{{ include "token-sidecar.selectorLabels" . }}
app.kubernetes.io/version: {{ include "token-sidecar.version" . | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/*
token-sidecar.podLabels: put these on the pod template of every workload that
runs the sidecar; the PodMonitor and the metrics Service select on them.
*/}}
{{- define "token-sidecar.podLabels" -}}
token-sidecar/release: {{ .Release.Name | quote }}
{{- end -}}

{{- define "token-sidecar.version" -}}
{{- .Values.image.tag | default .Chart.AppVersion | trunc 63 -}}
{{- end -}}

{{- define "token-sidecar.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{/* The port of a host:port listen address, or the default given. */}}
{{- define "token-sidecar.port" -}}
{{- $addr := index . 0 -}}
{{- if $addr -}}
{{- regexReplaceAll "^.*:" $addr "" | int -}}
{{- else -}}
{{- index . 1 -}}
{{- end -}}
{{- end -}}

{{- define "token-sidecar.tokenPort" -}}
{{- include "token-sidecar.port" (list .Values.config.listen 8181) -}}
{{- end -}}

{{- define "token-sidecar.adminPort" -}}
{{- include "token-sidecar.port" (list .Values.config.adminListen 9464) -}}
{{- end -}}

{{/*
token-sidecar.url: base URL for the app containers of the same pod, e.g.
http://127.0.0.1:8181 — append /token, /token/refresh or /proxy/….
*/}}
{{- define "token-sidecar.url" -}}
{{- include "token-sidecar.checkScope" . -}}
{{- $host := regexReplaceAll ":[0-9]+$" (.Values.config.listen | default "127.0.0.1:8181") "" -}}
{{- if or (eq $host "") (eq $host "0.0.0.0") (eq $host "[::]") -}}
{{- $host = "127.0.0.1" -}}
{{- end -}}
{{- printf "http://%s:%s" $host (include "token-sidecar.tokenPort" .) -}}
{{- end -}}
