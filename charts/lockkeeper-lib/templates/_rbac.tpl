{{- /*
Least privilege for the chosen mode (the sidecar's Kubernetes API calls):
  readinessGate: pods/status patch (the readiness-gate condition), pods get (its resourceVersion)
  label:         pods patch (the holder label), pods get (its resourceVersion)
  Events:        events.k8s.io events create, and pods get (the pod's UID for the Event)
A namespaced Role only, never a ClusterRole; nothing at all when the Kubernetes integration is off
(or in readinessProbe mode without Events).
*/ -}}

{{- /* The name of the pod's service account: serviceAccount.name, or the base name when the
library creates it (serviceAccount.create and the integration on), else "default". */ -}}
{{- define "lockkeeper-lib.serviceAccountName" -}}
{{- include "lockkeeper-lib.init" . -}}
{{- .state.serviceAccountName -}}
{{- end }}

{{- /* The ServiceAccount, when serviceAccount.create and the integration is on. Its own token is
not automounted; the pod asks for it (see "lockkeeper-lib.podServiceAccount"). */ -}}
{{- define "lockkeeper-lib.serviceAccount" -}}
{{- include "lockkeeper-lib.init" . -}}
{{- if and .state.values.serviceAccount.create .state.kube -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ .state.serviceAccountName }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- .state.labels | nindent 4 }}
  {{- with .state.values.serviceAccount.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
automountServiceAccountToken: false
{{- end -}}
{{- end }}

{{- /* The Role with exactly the verbs the mode needs, when rbac.create and there is any. */ -}}
{{- define "lockkeeper-lib.role" -}}
{{- include "lockkeeper-lib.init" . -}}
{{- if .state.rbac -}}
{{- $mode := .state.mode -}}
{{- $events := .state.values.kubernetes.events -}}
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: {{ .state.name }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- .state.labels | nindent 4 }}
rules:
  {{- if eq $mode "readinessGate" }}
  - apiGroups: [""]
    resources: ["pods/status"]
    verbs: ["patch"]
  {{- end }}
  {{- if or (eq $mode "label") (eq $mode "readinessGate") $events }}
  - apiGroups: [""]
    resources: ["pods"]
    verbs: ["get"{{ if eq $mode "label" }}, "patch"{{ end }}]
  {{- end }}
  {{- if $events }}
  - apiGroups: ["events.k8s.io"]
    resources: ["events"]
    verbs: ["create"]
  {{- end }}
{{- end -}}
{{- end }}

{{- /* The RoleBinding of that Role to the pod's service account, when there is a Role. */ -}}
{{- define "lockkeeper-lib.roleBinding" -}}
{{- include "lockkeeper-lib.init" . -}}
{{- if .state.rbac -}}
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: {{ .state.name }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- .state.labels | nindent 4 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: {{ .state.name }}
subjects:
  - kind: ServiceAccount
    name: {{ .state.serviceAccountName }}
    namespace: {{ .root.Release.Namespace }}
{{- end -}}
{{- end }}

{{- /* The Role and its RoleBinding, as two documents; nothing when there is no Role. */ -}}
{{- define "lockkeeper-lib.rbac" -}}
{{- include "lockkeeper-lib.init" . -}}
{{- if .state.rbac -}}
{{ include "lockkeeper-lib.role" . }}
---
{{ include "lockkeeper-lib.roleBinding" . }}
{{- end -}}
{{- end }}

{{- /* Every object the sidecar needs besides the pod: the ConfigMap, and (when there are any)
the ServiceAccount, Role and RoleBinding, as YAML documents. One file in your chart's templates/
with this include is enough. */ -}}
{{- define "lockkeeper-lib.resources" -}}
{{- include "lockkeeper-lib.init" . -}}
{{- $ctx := . -}}
{{- $docs := list (include "lockkeeper-lib.configMap" $ctx) -}}
{{- range $template := list "lockkeeper-lib.serviceAccount" "lockkeeper-lib.role" "lockkeeper-lib.roleBinding" -}}
{{- $doc := include $template $ctx -}}
{{- if $doc -}}
{{- $docs = append $docs $doc -}}
{{- end -}}
{{- end -}}
{{- join "\n---\n" $docs -}}
{{- end }}
