{{/*
Names, labels and small computed values shared by the templates.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "guywire.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The prefix of every resource name: fullnameOverride, or release name (+ chart name when absent). */}}
{{- define "guywire.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* name-version, for the helm.sh/chart label. */}}
{{- define "guywire.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The image tag: image.tag, or the chart's appVersion. */}}
{{- define "guywire.version" -}}
{{- default .Chart.AppVersion .Values.image.tag -}}
{{- end -}}

{{/*
Standard labels. Call with (dict "ctx" $ "component" "operator").
*/}}
{{- define "guywire.labels" -}}
helm.sh/chart: {{ include "guywire.chart" .ctx }}
{{ include "guywire.selectorLabels" . }}
app.kubernetes.io/version: {{ include "guywire.version" .ctx | trunc 63 | quote }}
app.kubernetes.io/part-of: guywire
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
{{- end -}}

{{/* The labels a component's selector matches: name, instance, component. */}}
{{- define "guywire.selectorLabels" -}}
app.kubernetes.io/name: {{ include "guywire.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end -}}

{{/* repository:tag, or repository:tag@digest when a digest is set. */}}
{{- define "guywire.image" -}}
{{- $tag := include "guywire.version" . -}}
{{- if .Values.image.digest -}}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* The operator's ServiceAccount name. */}}
{{- define "guywire.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "guywire.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The node agent's resource names: <full name>-node-agent, kept within 63 characters. */}}
{{- define "guywire.agentName" -}}
{{- printf "%s-node-agent" (include "guywire.fullname" . | trunc 52 | trimSuffix "-") -}}
{{- end -}}

{{/* The node agent's ServiceAccount name. */}}
{{- define "guywire.agentServiceAccountName" -}}
{{- if .Values.nodeAgent.serviceAccount.create -}}
{{- default (include "guywire.agentName" .) .Values.nodeAgent.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.nodeAgent.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding the webhook's serving certificate (tls.crt, tls.key). */}}
{{- define "guywire.webhookSecretName" -}}
{{- if .Values.webhook.existingSecret -}}
{{- .Values.webhook.existingSecret -}}
{{- else -}}
{{- printf "%s-webhook-tls" (include "guywire.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The cert-manager Certificate's name. */}}
{{- define "guywire.certificateName" -}}
{{- printf "%s-webhook" (include "guywire.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* "true" when the operator runs with kopf peering (more than one replica). */}}
{{- define "guywire.peering" -}}
{{- if gt (int .Values.replicaCount) 1 -}}true{{- end -}}
{{- end -}}

{{/* "true" when the operator watches every namespace (kopf peering is then cluster-wide). */}}
{{- define "guywire.clusterwide" -}}
{{- if not .Values.operator.watchNamespaces -}}true{{- end -}}
{{- end -}}

{{/*
Refuse value combinations the schema cannot express, with a message that says what to change.
*/}}
{{- define "guywire.validate" -}}
{{- if and (eq (toString .Values.image.tag) "latest") (not .Values.image.digest) -}}
{{- fail "image.tag is latest, which can change under the same name (guywire's own rule GW-OBS-007): pin a version tag, or set image.digest." -}}
{{- end -}}
{{- if and .Values.webhook.enabled .Values.webhook.certManager.enabled .Values.webhook.existingSecret -}}
{{- fail "webhook.certManager.enabled and webhook.existingSecret are both set: choose one source of the webhook certificate." -}}
{{- end -}}
{{- if and .Values.webhook.enabled .Values.webhook.existingSecret (not .Values.webhook.caBundle) -}}
{{- fail "webhook.existingSecret needs webhook.caBundle: the base64 PEM of the CA that signed it, so the API server trusts the webhook." -}}
{{- end -}}
{{- if and .Values.podDisruptionBudget.enabled (not (kindIs "invalid" .Values.podDisruptionBudget.minAvailable)) (not (kindIs "invalid" .Values.podDisruptionBudget.maxUnavailable)) -}}
{{- fail "podDisruptionBudget.minAvailable and podDisruptionBudget.maxUnavailable are both set: set one, and the other to null." -}}
{{- end -}}
{{- if and (include "guywire.peering" .) (not (include "guywire.clusterwide" .)) -}}
{{- range .Values.operator.watchNamespaces -}}
{{- if regexMatch "[*?\\[!]" . -}}
{{- fail (printf "operator.watchNamespaces has the pattern %q, but replicaCount > 1 peers through a KopfPeering in each watched namespace: list namespaces by name, or set replicaCount: 1." .) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
The operator's rules, verb by verb, for one scope: "cluster" (cluster-scoped kinds only), "namespaced"
(namespaced kinds only: a Role in each of operator.watchNamespaces) or "all" (a ClusterRole watching
every namespace). Kinds from files/operator-api.yaml, generated from the operator's code: what it
watches (list, watch: kopf lists and watches, it never reads one object) and what it annotates (patch;
it only merge-patches metadata.annotations guywire.dev/*, but RBAC cannot narrow `patch` to a field).
*/}}
{{- define "guywire.operatorRules" -}}
{{- $ := .ctx }}{{ $scope := .scope }}
{{- $clusterScoped := list "namespaces" "nodes" "clustercomplexitypolicies" "clusterservingruntimes" "customresourcedefinitions" "clusterpolicyreports" "clusterreports" }}
{{- $api := $.Files.Get "files/operator-api.yaml" | fromYaml }}
{{- $annotate := dict }}
{{- range $api.annotate }}{{ $_ := set $annotate .apiGroup .resources }}{{ end }}
{{- if $.Values.operator.taintUnhealthyGpuNodes }}
{{- $_ := set $annotate "" (append (get $annotate "" | default list) "nodes") }}
{{- end }}
{{- range $api.read }}
{{- $group := .apiGroup }}
{{- $patched := get $annotate $group | default list }}
{{- $readOnly := list }}{{ $readPatch := list }}
{{- range .resources }}
{{- $cluster := has . $clusterScoped }}
{{- if or (eq $scope "all") (and (eq $scope "cluster") $cluster) (and (eq $scope "namespaced") (not $cluster)) }}
{{- if has . $patched }}{{ $readPatch = append $readPatch . }}{{ else }}{{ $readOnly = append $readOnly . }}{{ end }}
{{- end }}
{{- end }}
{{- with $readPatch }}
- apiGroups: [{{ $group | quote }}]
  resources: {{ toJson . }}
  verbs: ["list", "watch", "patch"]
{{- end }}
{{- with $readOnly }}
- apiGroups: [{{ $group | quote }}]
  resources: {{ toJson . }}
  verbs: ["list", "watch"]
{{- end }}
{{- end }}
{{- if ne $scope "cluster" }}
# Warning Events, one per workload and rule; patched to refresh a repeated one.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
# Status of the namespaced policies: matched, violating, findings, the Ready condition.
- apiGroups: ["guywire.dev"]
  resources: ["complexitypolicies/status"]
  verbs: ["patch"]
{{- end }}
{{- if ne $scope "namespaced" }}
- apiGroups: ["guywire.dev"]
  resources: ["clustercomplexitypolicies/status"]
  verbs: ["patch"]
# kopf discovers CRDs that appear later (e.g. the Prometheus Operator's).
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
{{- end }}
{{- if $.Values.operator.policyReports }}
{{- /* Reports per namespace and a cluster report for node findings (Policy Reporter reads them); list finds the
chunks an earlier run wrote, delete removes those no longer needed (only guywire's own, by label). */}}
{{- range $group, $res := dict "wgpolicyk8s.io" (list "policyreports" "clusterpolicyreports") "openreports.io" (list "reports" "clusterreports") }}
{{- $name := ternary "wgpolicyk8s" "openreports" (eq $group "wgpolicyk8s.io") }}
{{- if ne $.Values.reports.api (ternary "openreports" "wgpolicyk8s" (eq $name "wgpolicyk8s")) }}
{{- $pick := list }}
{{- range $res }}{{ $cluster := has . $clusterScoped }}
{{- if or (eq $scope "all") (and (eq $scope "cluster") $cluster) (and (eq $scope "namespaced") (not $cluster)) }}{{ $pick = append $pick . }}{{ end }}
{{- end }}
{{- with $pick }}
- apiGroups: [{{ $group | quote }}]
  resources: {{ toJson . }}
  verbs: ["list", "create", "patch", "delete"]
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}
