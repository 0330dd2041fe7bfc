{{- /*
The gating wiring, per gating.mode. Each template renders what its mode needs and nothing in the
other modes, so a chart can include all of them unconditionally.

  mode            pod spec                        main container           Service selector
  readinessProbe  -                               readinessProbe: /readyz  -
  readinessGate   readinessGates: condition       your own probe           -
  label           -                               your own probe           holder label "true"
*/ -}}

{{- /*
The main container's readinessProbe, as `readinessProbe:` plus its body. Extra argument:
  probe  (optional) your container's own readinessProbe (a dict).
readinessProbe mode: GET /readyz on the sidecar's port (same pod network), which answers 200
only while this pod holds the lock; `probe` is not used. Other modes: `probe`, if set; else
nothing.
*/ -}}
{{- define "lockkeeper-lib.readinessProbe" -}}
{{- include "lockkeeper-lib.init" . -}}
{{- $v := .state.values -}}
{{- if eq .state.mode "readinessProbe" -}}
# Ready only while the sidecar (same pod network) answers 200: it holds the lock.
readinessProbe:
  httpGet:
    path: /readyz
    port: {{ $v.sidecar.port }}
  successThreshold: 1
  {{- toYaml $v.gating.probe | nindent 2 }}
{{- else -}}
{{- with get . "probe" -}}
readinessProbe:
  {{- toYaml . | nindent 2 }}
{{- end -}}
{{- end -}}
{{- end }}

{{- /* readinessGate mode: the pod's `readinessGates:` with the condition the sidecar patches. */ -}}
{{- define "lockkeeper-lib.readinessGates" -}}
{{- include "lockkeeper-lib.init" . -}}
{{- if eq .state.mode "readinessGate" -}}
# Ready only while the sidecar has patched this condition to True (it holds the lock).
readinessGates:
  - conditionType: {{ .state.values.gating.conditionType | quote }}
{{- end -}}
{{- end }}

{{- /* label mode: the entry to add to your Service's selector (the holder label, "true" only on
the pod whose sidecar holds the lock). */ -}}
{{- define "lockkeeper-lib.serviceSelector" -}}
{{- include "lockkeeper-lib.init" . -}}
{{- if eq .state.mode "label" -}}
# label mode: only the pod whose sidecar holds the lock carries "true".
{{ .state.values.gating.label }}: "true"
{{- end -}}
{{- end }}

{{- /* The pod's serviceAccountName and automountServiceAccountToken: the token only when the
sidecar uses the Kubernetes API. */ -}}
{{- define "lockkeeper-lib.podServiceAccount" -}}
{{- include "lockkeeper-lib.init" . -}}
{{- if .state.kube -}}
serviceAccountName: {{ .state.serviceAccountName }}
automountServiceAccountToken: true
{{- else -}}
{{- with .state.values.serviceAccount.name -}}
serviceAccountName: {{ . }}
{{ end -}}
automountServiceAccountToken: false
{{- end -}}
{{- end }}

{{- /*
The Deployment strategy, as the body of `strategy:`. Extra arguments:
  strategy  (optional) your strategy (a dict); empty: chosen by mode;
  replicas  (optional) the replica count, default 1.
In the gated modes (readinessProbe, readinessGate) only the holder is Ready, so a rolling update
that keeps any pod available (replicas - maxUnavailable >= 1) waits forever for a new pod that
cannot become Ready while the old holder lives: maxUnavailable must cover every replica. Such a
strategy is refused. The default: gated modes RollingUpdate maxSurge 1 / maxUnavailable 100%;
label mode maxSurge 1 / maxUnavailable 0 (every pod is Ready there).
*/ -}}
{{- define "lockkeeper-lib.strategy" -}}
{{- include "lockkeeper-lib.init" . -}}
{{- $gated := ne .state.mode "label" -}}
{{- $s := get . "strategy" -}}
{{- $replicas := get . "replicas" | default 1 -}}
{{- if $s -}}
{{- if and $gated (eq (default "RollingUpdate" (get $s "type")) "RollingUpdate") -}}
{{- $mu := "" -}}
{{- $rolling := get $s "rollingUpdate" -}}
{{- if and $rolling (hasKey $rolling "maxUnavailable") -}}
{{- $mu = toString (get $rolling "maxUnavailable") -}}
{{- end -}}
{{- if not (or (eq $mu "100%") (and (regexMatch "^[0-9]+$" $mu) (ge (atoi $mu) (int $replicas)))) -}}
{{- fail (printf "strategy: in gating.mode=%s only the lock holder is Ready, so a RollingUpdate with maxUnavailable=%s (< replicaCount=%v) deadlocks; use maxUnavailable: 100%% or type: Recreate (see the chart README)" .state.mode (default "25%" $mu) $replicas) -}}
{{- end -}}
{{- end -}}
{{- toYaml $s -}}
{{- else if $gated -}}
type: RollingUpdate
rollingUpdate:
  maxSurge: 1
  maxUnavailable: 100%
{{- else -}}
type: RollingUpdate
rollingUpdate:
  maxSurge: 1
  maxUnavailable: 0
{{- end -}}
{{- end }}
