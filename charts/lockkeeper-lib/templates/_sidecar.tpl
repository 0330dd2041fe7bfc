{{- /*
The sidecar container, one list item. Both variants:
  sidecar.native=true  (default, Kubernetes >= 1.29): an init container with restartPolicy
                       Always, started before the main container and stopped after it;
  sidecar.native=false a plain second container, for older clusters.
"lockkeeper-lib.initContainers" and "lockkeeper-lib.containers" render it only where it belongs,
so a pod spec can include both unconditionally.
*/ -}}
{{- define "lockkeeper-lib.container" -}}
{{- include "lockkeeper-lib.init" . -}}
{{- $v := .state.values -}}
- name: lockkeeper
  image: {{ include "lockkeeper-lib.image" . }}
  imagePullPolicy: {{ $v.sidecar.image.pullPolicy }}
  {{- if $v.sidecar.native }}
  # A native sidecar: started before the main container, stopped after it.
  restartPolicy: Always
  {{- end }}
  args:
    - run
    - --config
    - /etc/lockkeeper/config/config.yaml
    {{- range $v.sidecar.extraArgs }}
    - {{ . | quote }}
    {{- end }}
  env:
    - name: POD_NAME
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
    - name: POD_NAMESPACE
      valueFrom:
        fieldRef:
          fieldPath: metadata.namespace
    {{- with $v.sidecar.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  ports:
    - name: lockkeeper
      containerPort: {{ $v.sidecar.port }}
      protocol: TCP
  # The main container starts once the sidecar serves HTTP (for a native sidecar, kubelet waits
  # for this probe). Never /readyz here: that would hold the main container of every standby.
  startupProbe:
    httpGet:
      path: /livez
      port: lockkeeper
    periodSeconds: 1
    failureThreshold: 30
  livenessProbe:
    httpGet:
      path: /livez
      port: lockkeeper
    {{- toYaml $v.sidecar.livenessProbe | nindent 4 }}
  {{- with $v.sidecar.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.sidecar.securityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  volumeMounts:
    - name: lockkeeper-config
      mountPath: /etc/lockkeeper/config
      readOnly: true
    {{- if $v.etcd.tls.enabled }}
    - name: etcd-tls
      mountPath: /etc/lockkeeper/etcd-tls
      readOnly: true
    {{- end }}
    {{- if $v.etcd.auth.enabled }}
    - name: etcd-auth
      mountPath: /etc/lockkeeper/etcd-auth
      readOnly: true
    {{- end }}
{{- end }}

{{- /* The sidecar as an initContainers item when sidecar.native is true; nothing otherwise. */ -}}
{{- define "lockkeeper-lib.initContainers" -}}
{{- include "lockkeeper-lib.init" . -}}
{{- if .state.values.sidecar.native -}}
{{- include "lockkeeper-lib.container" . -}}
{{- end -}}
{{- end }}

{{- /* The sidecar as a containers item when sidecar.native is false; nothing otherwise. */ -}}
{{- define "lockkeeper-lib.containers" -}}
{{- include "lockkeeper-lib.init" . -}}
{{- if not .state.values.sidecar.native -}}
{{- include "lockkeeper-lib.container" . -}}
{{- end -}}
{{- end }}

{{- /*
The pod volumes the sidecar mounts, as list items: lockkeeper-config (the ConfigMap of
"lockkeeper-lib.configMap"), and etcd-tls / etcd-auth from your Secrets when etcd.tls.enabled /
etcd.auth.enabled.
*/ -}}
{{- define "lockkeeper-lib.volumes" -}}
{{- include "lockkeeper-lib.init" . -}}
{{- $v := .state.values -}}
- name: lockkeeper-config
  configMap:
    name: {{ .state.name }}
{{- if $v.etcd.tls.enabled }}
- name: etcd-tls
  secret:
    secretName: {{ $v.etcd.tls.secretName }}
    defaultMode: 0440
{{- end }}
{{- if $v.etcd.auth.enabled }}
- name: etcd-auth
  secret:
    secretName: {{ $v.etcd.auth.secretName }}
    defaultMode: 0440
    items:
      - key: {{ $v.etcd.auth.passwordKey }}
        path: {{ $v.etcd.auth.passwordKey }}
{{- end }}
{{- end }}
