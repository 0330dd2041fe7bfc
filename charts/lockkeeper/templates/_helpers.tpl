{{/* Chart name. */}}
{{- define "lockkeeper.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: RELEASE-CHART, or RELEASE when it already contains the chart name. */}}
{{- define "lockkeeper.fullname" -}}
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

{{- define "lockkeeper.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "lockkeeper.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lockkeeper.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "lockkeeper.labels" -}}
helm.sh/chart: {{ include "lockkeeper.chart" . }}
{{ include "lockkeeper.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Renders a template of the lockkeeper-lib library chart (the sidecar, its ConfigMap, the gating
wiring and the RBAC) with this chart's values, names and labels:
  include "lockkeeper.lib" (list "lockkeeper-lib.TEMPLATE" $)
  include "lockkeeper.lib" (list "lockkeeper-lib.TEMPLATE" $ (dict "probe" ...))   # extra arguments
*/}}
{{- define "lockkeeper.lib" -}}
{{- $root := index . 1 -}}
{{- $args := dict "root" $root "values" $root.Values "name" (include "lockkeeper.fullname" $root) "labels" (include "lockkeeper.labels" $root) -}}
{{- if gt (len .) 2 }}{{ $args = merge $args (index . 2) }}{{ end -}}
{{- include (index . 0) $args -}}
{{- end }}

{{/* The lock name. */}}
{{- define "lockkeeper.lockName" -}}
{{- include "lockkeeper.lib" (list "lockkeeper-lib.lockName" .) }}
{{- end }}

{{/* PromQL selector for this release's lockkeeper series. */}}
{{- define "lockkeeper.promSelector" -}}
{{- if .Values.prometheusRule.selector }}
{{- .Values.prometheusRule.selector }}
{{- else }}
{{- printf "namespace=%q, pod=~%q" .Release.Namespace (printf "%s-.+" (include "lockkeeper.fullname" .)) }}
{{- end }}
{{- end }}
