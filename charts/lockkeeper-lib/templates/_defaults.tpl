{{- /*
The library's defaults for the lockkeeper values. The values passed to a template (its "values"
argument) are merged over these, map by map (a list or a scalar replaces the default), so a chart
needs to set only what it changes: typically lock.name, etcd.endpoints and gating.mode.

These are the lockkeeper application chart's defaults for the same keys (charts/lockkeeper/
values.yaml documents each one); scripts/check-chart.sh fails when the two differ. This block must
stay plain YAML (no template actions): the check reads it as such.
*/ -}}
{{- define "lockkeeper-lib.defaults" -}}
gating:
  mode: readinessProbe
  conditionType: lockkeeper.io/lock-held
  label: lockkeeper.io/holder
  probe:
    periodSeconds: 1
    timeoutSeconds: 1
    failureThreshold: 1
lock:
  name: ""
  prefix: /locks/
  ttl: 10s
  renewInterval: ""
  safetyMargin: ""
  lockDelay: ""
etcd:
  endpoints:
    - http://etcd-0.etcd:2379
    - http://etcd-1.etcd:2379
    - http://etcd-2.etcd:2379
  connectTimeout: ""
  requestTimeout: ""
  tls:
    enabled: false
    secretName: ""
    caKey: ca.crt
    certKey: tls.crt
    keyKey: tls.key
  auth:
    enabled: false
    username: ""
    secretName: ""
    passwordKey: password
kubernetes:
  integration: auto
  events: true
sidecar:
  native: true
  image:
    repository: lockkeeper
    tag: ""
    pullPolicy: IfNotPresent
  port: 8475
  logFormat: json
  logLevel: info
  drainDelay: ""
  shutdownTimeout: 10s
  extraArgs: []
  extraEnv: []
  resources:
    requests:
      cpu: 10m
      memory: 32Mi
    limits:
      memory: 64Mi
  securityContext:
    runAsNonRoot: true
    runAsUser: 65532
    runAsGroup: 65532
    allowPrivilegeEscalation: false
    readOnlyRootFilesystem: true
    capabilities:
      drop: ["ALL"]
  livenessProbe:
    periodSeconds: 10
    timeoutSeconds: 2
    failureThreshold: 3
serviceAccount:
  create: true
  name: ""
  annotations: {}
rbac:
  create: true
{{- end }}

{{- /* The sidecar image tag used when sidecar.image.tag is empty: this chart's appVersion. */ -}}
{{- define "lockkeeper-lib.appVersion" -}}
0.1.0
{{- end }}
