{{- /* The sidecar's configuration file (`lockkeeper run --config`), generated from the values. */ -}}
{{- define "lockkeeper-lib.config" -}}
{{- include "lockkeeper-lib.init" . -}}
{{- $v := .state.values -}}
{{- $etcd := dict "endpoints" $v.etcd.endpoints -}}
{{- with $v.etcd.connectTimeout }}{{ $_ := set $etcd "connect_timeout" . }}{{ end -}}
{{- with $v.etcd.requestTimeout }}{{ $_ := set $etcd "request_timeout" . }}{{ end -}}
{{- if $v.etcd.tls.enabled -}}
{{- $_ := set $etcd "ca_file" (printf "/etc/lockkeeper/etcd-tls/%s" $v.etcd.tls.caKey) -}}
{{- if and $v.etcd.tls.certKey $v.etcd.tls.keyKey -}}
{{- $_ := set $etcd "cert_file" (printf "/etc/lockkeeper/etcd-tls/%s" $v.etcd.tls.certKey) -}}
{{- $_ := set $etcd "key_file" (printf "/etc/lockkeeper/etcd-tls/%s" $v.etcd.tls.keyKey) -}}
{{- end -}}
{{- end -}}
{{- if $v.etcd.auth.enabled -}}
{{- $_ := set $etcd "username" $v.etcd.auth.username -}}
{{- $_ := set $etcd "password_file" (printf "/etc/lockkeeper/etcd-auth/%s" $v.etcd.auth.passwordKey) -}}
{{- end -}}
{{- $lock := dict "name" (include "lockkeeper-lib.lockName" .) "prefix" $v.lock.prefix "ttl" $v.lock.ttl -}}
{{- with $v.lock.renewInterval }}{{ $_ := set $lock "renew_interval" . }}{{ end -}}
{{- with $v.lock.safetyMargin }}{{ $_ := set $lock "safety_margin" . }}{{ end -}}
{{- with $v.lock.lockDelay }}{{ $_ := set $lock "lock_delay" . }}{{ end -}}
{{- $k8s := dict "enabled" (ternary "on" "off" .state.kube) -}}
{{- if .state.kube -}}
{{- $_ := set $k8s "condition_type" (ternary $v.gating.conditionType "" (eq .state.mode "readinessGate")) -}}
{{- if eq .state.mode "label" }}{{ $_ := set $k8s "label" $v.gating.label }}{{ end -}}
{{- $_ := set $k8s "events" $v.kubernetes.events -}}
{{- end -}}
{{- $config := dict
  "etcd" $etcd
  "lock" $lock
  "listen" (printf "0.0.0.0:%v" $v.sidecar.port)
  "log" (dict "format" $v.sidecar.logFormat "level" $v.sidecar.logLevel)
  "shutdown" (dict "drain_delay" (include "lockkeeper-lib.drainDelay" .) "timeout" $v.sidecar.shutdownTimeout)
  "kubernetes" $k8s
-}}
{{- toYaml $config -}}
{{- end }}

{{- /* The ConfigMap holding config.yaml, which "lockkeeper-lib.volumes" mounts. */ -}}
{{- define "lockkeeper-lib.configMap" -}}
{{- include "lockkeeper-lib.init" . -}}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .state.name }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- .state.labels | nindent 4 }}
data:
  # lockkeeper's configuration file (`lockkeeper run --config`), generated from the chart values.
  config.yaml: |
    {{- include "lockkeeper-lib.config" . | nindent 4 }}
{{- end }}

{{- /* sha256 of the ConfigMap's config.yaml (the file as mounted), for a pod annotation that
rolls the pods when the configuration changes. */ -}}
{{- define "lockkeeper-lib.configChecksum" -}}
{{- printf "%s\n" (include "lockkeeper-lib.config" .) | sha256sum -}}
{{- end }}
