{{- /*
How every template here is called:

  include "lockkeeper-lib.TEMPLATE" (dict "root" $ "values" .Values.lockkeeper)

  root    (required) the chart's root context, `$`: .Release, .Chart, .Capabilities, .Values.
  values  (optional) the lockkeeper values, shaped like the lockkeeper application chart's keys
          gating, lock, etcd, kubernetes, sidecar, serviceAccount and rbac; merged over
          "lockkeeper-lib.defaults" (maps key by key; a list or scalar replaces the default).
  name    (optional) base name of the objects the library renders (ConfigMap, ServiceAccount,
          Role, RoleBinding) and the default lock name. Default: the release's full name plus
          "-lockkeeper" (just the full name when it already contains "lockkeeper").
  labels  (optional) labels of those objects, as YAML text (e.g. the output of your chart's
          labels helper) or a dict. Default: the standard Helm labels of your chart plus
          app.kubernetes.io/component: lockkeeper.

A few templates take one more argument (see each). The first call resolves the values, checks
them and caches the result in the same dict under the key "state", so build the dict once, e.g.
`{{- $lk := dict "root" $ "values" .Values.lockkeeper }}`, and pass it to every include of a file.
Error messages name the offending key relative to "values" (e.g. etcd.tls.secretName).
*/ -}}

{{- /* Resolves and checks the values once per argument dict; the result goes to .state. */ -}}
{{- define "lockkeeper-lib.init" -}}
{{- if not (hasKey . "state") -}}
{{- if not (get . "root") -}}
{{- fail "lockkeeper-lib: pass a dict with the chart's root context, e.g. include \"lockkeeper-lib.container\" (dict \"root\" $ \"values\" .Values.lockkeeper)" -}}
{{- end -}}
{{- $root := .root -}}
{{- $src := get . "values" | default dict -}}
{{- if not (kindIs "map" $src) -}}
{{- fail (printf "lockkeeper-lib: \"values\" must be a map of lockkeeper values, not %s" (kindOf $src)) -}}
{{- end -}}
{{- $v := fromYaml (include "lockkeeper-lib.defaults" .) -}}
{{- include "lockkeeper-lib.merge" (dict "dst" $v "src" $src) -}}
{{- $mode := toString $v.gating.mode -}}
{{- if not (has $mode (list "readinessProbe" "readinessGate" "label")) -}}
{{- fail (printf "gating.mode must be readinessProbe, readinessGate or label, not %q" $mode) -}}
{{- end -}}
{{- /* Whether the sidecar talks to the Kubernetes API. readinessGate and label modes need it; in
readinessProbe mode it is only for Events. */ -}}
{{- $integration := toString $v.kubernetes.integration | replace "true" "on" | replace "false" "off" -}}
{{- $kube := false -}}
{{- if or (eq $mode "readinessGate") (eq $mode "label") -}}
{{- if eq $integration "off" -}}
{{- fail (printf "gating.mode=%s needs the Kubernetes integration: set kubernetes.integration to auto or on (or use gating.mode=readinessProbe)" $mode) -}}
{{- end -}}
{{- $kube = true -}}
{{- else if eq $integration "on" -}}
{{- $kube = true -}}
{{- else if and (eq $integration "auto") $v.kubernetes.events -}}
{{- $kube = true -}}
{{- end -}}
{{- if and $v.sidecar.native (semverCompare "<1.29.0-0" $root.Capabilities.KubeVersion.Version) -}}
{{- fail (printf "sidecar.native=true needs Kubernetes >= 1.29 (native sidecars); this cluster is %s: set sidecar.native=false" $root.Capabilities.KubeVersion.Version) -}}
{{- end -}}
{{- if and $v.etcd.tls.enabled (not $v.etcd.tls.secretName) -}}
{{- fail "etcd.tls.enabled needs etcd.tls.secretName" -}}
{{- end -}}
{{- if and $v.etcd.auth.enabled (not (and $v.etcd.auth.secretName $v.etcd.auth.username)) -}}
{{- fail "etcd.auth.enabled needs etcd.auth.username and etcd.auth.secretName" -}}
{{- end -}}
{{- $name := get . "name" -}}
{{- if not $name -}}
{{- $full := include "lockkeeper-lib.releaseFullname" $root -}}
{{- $name = ternary $full (printf "%s-lockkeeper" $full | trunc 63 | trimSuffix "-") (contains "lockkeeper" $full) -}}
{{- end -}}
{{- $labels := get . "labels" -}}
{{- if kindIs "map" $labels -}}
{{- $labels = toYaml $labels -}}
{{- else if not $labels -}}
{{- $labels = include "lockkeeper-lib.defaultLabels" $root -}}
{{- end -}}
{{- $sa := default "default" $v.serviceAccount.name -}}
{{- if and $v.serviceAccount.create $kube -}}
{{- $sa = default $name $v.serviceAccount.name -}}
{{- end -}}
{{- /* The Role has something to grant: the mode's pod writes, or Events. */ -}}
{{- $rbac := and $v.rbac.create $kube (or (ne $mode "readinessProbe") $v.kubernetes.events) -}}
{{- $_ := set . "state" (dict
  "values" $v
  "mode" $mode
  "kube" $kube
  "name" $name
  "labels" (trim $labels)
  "serviceAccountName" $sa
  "rbac" $rbac
) -}}
{{- end -}}
{{- end }}

{{- /* Deep merge of dict .src into dict .dst, in place: maps merge key by key, anything else
replaces. */ -}}
{{- define "lockkeeper-lib.merge" -}}
{{- $dst := .dst -}}
{{- range $key, $value := .src -}}
{{- $have := get $dst $key -}}
{{- if and (kindIs "map" $value) (kindIs "map" $have) -}}
{{- include "lockkeeper-lib.merge" (dict "dst" $have "src" $value) -}}
{{- else -}}
{{- $_ := set $dst $key (deepCopy $value) -}}
{{- end -}}
{{- end -}}
{{- end }}

{{- /* The standard Helm full name of the release (RELEASE-CHART, or RELEASE when it contains the
chart name; fullnameOverride and nameOverride honoured). Context: the root context. */ -}}
{{- define "lockkeeper-lib.releaseFullname" -}}
{{- $override := get .Values "fullnameOverride" -}}
{{- if $override -}}
{{- $override | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name (get .Values "nameOverride") -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end }}

{{- /* Default labels of the library's objects. Context: the root context. */ -}}
{{- define "lockkeeper-lib.defaultLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ default .Chart.Name (get .Values "nameOverride") | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- with .Chart.AppVersion }}
app.kubernetes.io/version: {{ . | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: lockkeeper
{{- end }}

{{- /* Base name of the library's objects (see "name" above). */ -}}
{{- define "lockkeeper-lib.name" -}}
{{- include "lockkeeper-lib.init" . -}}
{{- .state.name -}}
{{- end }}

{{- /* The lock name: lock.name, or the base name. */ -}}
{{- define "lockkeeper-lib.lockName" -}}
{{- include "lockkeeper-lib.init" . -}}
{{- default .state.name .state.values.lock.name -}}
{{- end }}

{{- /* "true" when the sidecar's Kubernetes API integration is on, "" when it is off. */ -}}
{{- define "lockkeeper-lib.kubeEnabled" -}}
{{- include "lockkeeper-lib.init" . -}}
{{- if .state.kube }}true{{ end -}}
{{- end }}

{{- /* The sidecar image, repository:tag (the tag defaults to "lockkeeper-lib.appVersion"). */ -}}
{{- define "lockkeeper-lib.image" -}}
{{- include "lockkeeper-lib.init" . -}}
{{- $image := .state.values.sidecar.image -}}
{{- printf "%s:%s" $image.repository (default (include "lockkeeper-lib.appVersion" .) $image.tag) -}}
{{- end }}

{{- /* Drain delay: a plain sidecar stops together with the main container, so it waits a bit. */ -}}
{{- define "lockkeeper-lib.drainDelay" -}}
{{- include "lockkeeper-lib.init" . -}}
{{- $sidecar := .state.values.sidecar -}}
{{- if $sidecar.drainDelay -}}
{{- $sidecar.drainDelay -}}
{{- else if $sidecar.native -}}
0s
{{- else -}}
5s
{{- end -}}
{{- end }}
