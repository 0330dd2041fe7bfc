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

{{/* The lock name. */}}
{{- define "lockkeeper.lockName" -}}
{{- default (include "lockkeeper.fullname" .) .Values.lock.name }}
{{- end }}

{{/*
Whether the sidecar talks to the Kubernetes API: "true" or "". readinessGate and label modes need
it; in readinessProbe mode it is only for Events.
*/}}
{{- define "lockkeeper.kubeEnabled" -}}
{{- $mode := .Values.gating.mode }}
{{- $integration := toString .Values.kubernetes.integration | replace "true" "on" | replace "false" "off" }}
{{- if or (eq $mode "readinessGate") (eq $mode "label") }}
{{- if eq $integration "off" }}
{{- fail (printf "gating.mode=%s needs the Kubernetes integration: set kubernetes.integration to auto or on (or use gating.mode=readinessProbe)" $mode) }}
{{- end }}
{{- true }}
{{- else if eq $integration "on" }}
{{- true }}
{{- else if and (eq $integration "auto") .Values.kubernetes.events }}
{{- true }}
{{- end }}
{{- end }}

{{- define "lockkeeper.serviceAccountName" -}}
{{- if and .Values.serviceAccount.create (include "lockkeeper.kubeEnabled" .) }}
{{- default (include "lockkeeper.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Whether the Role has anything to grant: "true" or "". */}}
{{- define "lockkeeper.needsRbac" -}}
{{- if and .Values.rbac.create (include "lockkeeper.kubeEnabled" .) }}
{{- if or (ne .Values.gating.mode "readinessProbe") .Values.kubernetes.events }}
{{- true }}
{{- end }}
{{- end }}
{{- end }}

{{- define "lockkeeper.sidecarImage" -}}
{{- printf "%s:%s" .Values.sidecar.image.repository (default .Chart.AppVersion .Values.sidecar.image.tag) }}
{{- end }}

{{/* Drain delay: a plain sidecar stops together with the main container, so it waits a bit. */}}
{{- define "lockkeeper.drainDelay" -}}
{{- if .Values.sidecar.drainDelay }}
{{- .Values.sidecar.drainDelay }}
{{- else if .Values.sidecar.native }}
{{- "0s" }}
{{- else }}
{{- "5s" }}
{{- end }}
{{- end }}

{{/*
The Deployment strategy. Gated modes: only the holder is Ready, so a rolling update that keeps
any pod available (minAvailable = replicas - maxUnavailable >= 1) waits forever for a new pod
that cannot become Ready while the old holder lives. maxUnavailable must cover every replica.
*/}}
{{- define "lockkeeper.strategy" -}}
{{- $gated := ne .Values.gating.mode "label" }}
{{- $s := .Values.strategy }}
{{- if $s }}
{{- if and $gated (eq (default "RollingUpdate" $s.type) "RollingUpdate") }}
{{- $mu := "" }}
{{- if and $s.rollingUpdate (hasKey $s.rollingUpdate "maxUnavailable") }}
{{- $mu = toString $s.rollingUpdate.maxUnavailable }}
{{- end }}
{{- if not (or (eq $mu "100%") (and (regexMatch "^[0-9]+$" $mu) (ge (atoi $mu) (int .Values.replicaCount)))) }}
{{- fail (printf "strategy: in gating.mode=%s only the lock holder is Ready, so a RollingUpdate with maxUnavailable=%s (< replicaCount=%v) deadlocks; use maxUnavailable: 100%% or type: Recreate (see the chart README)" .Values.gating.mode (default "25%" $mu) .Values.replicaCount) }}
{{- end }}
{{- end }}
{{- toYaml $s }}
{{- else if $gated }}
type: RollingUpdate
rollingUpdate:
  maxSurge: 1
  maxUnavailable: 100%
{{- else }}
type: RollingUpdate
rollingUpdate:
  maxSurge: 1
  maxUnavailable: 0
{{- end }}
{{- end }}

{{/* PromQL selector for this release's lockkeeper series. */}}
{{- define "lockkeeper.promSelector" -}}
{{- if .Values.prometheusRule.selector }}
{{- .Values.prometheusRule.selector }}
{{- else }}
{{- printf "namespace=%q, pod=~%q" .Release.Namespace (printf "%s-.+" (include "lockkeeper.fullname" .)) }}
{{- end }}
{{- end }}
