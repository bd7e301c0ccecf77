{{/* Names and labels shared by the templates. */}}

{{- define "kubetune.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kubetune.fullname" -}}
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

{{/* Labels of every object, without app.kubernetes.io/component. */}}
{{- define "kubetune.baseLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "kubetune.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kubetune
{{- end }}

{{/* Labels of the operator's objects. */}}
{{- define "kubetune.labels" -}}
{{ include "kubetune.baseLabels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "kubetune.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubetune.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "kubetune.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kubetune.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "kubetune.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "kubetune.leaseName" -}}
{{- default (include "kubetune.fullname" .) .Values.ha.leaseName }}
{{- end }}

{{/* Whether the operator watches every namespace ("true") or a list ("" otherwise). */}}
{{- define "kubetune.clusterWide" -}}
{{- if not .Values.watch.namespaces }}true{{ end }}
{{- end }}

{{/* The namespaces that get a trial ServiceAccount: the watched ones, or (cluster-wide) the
release's and trials.namespaces. */}}
{{- define "kubetune.trialNamespaces" -}}
{{- if .Values.watch.namespaces }}
{{- toJson (uniq .Values.watch.namespaces) }}
{{- else }}
{{- toJson (uniq (prepend .Values.trials.namespaces .Release.Namespace)) }}
{{- end }}
{{- end }}

{{/* Whether the cluster serves the Prometheus Operator's API ("true" or ""). */}}
{{- define "kubetune.hasPrometheusOperator" -}}
{{- if .Capabilities.APIVersions.Has "monitoring.coreos.com/v1" }}true{{ end }}
{{- end }}

{{/* The operator's rules in a watched namespace (templates/rbac.yaml). */}}
{{- define "kubetune.namespacedRules" -}}
# Trial pods: created per trial; patched to stop one (its activeDeadlineSeconds lowered, so
# that its logs stay); deleted past the study's podRetention (all of a study's at once when it
# is deleted); listed and watched to follow the trials.
- apiGroups: [""]
  resources: [pods]
  verbs: [create, patch, delete, deletecollection, list, watch]
{{- if .Values.trials.jobs.enabled }}
# Trials that are Jobs: created per trial; read, then deleted with their pods orphaned to stop
# one (its pods are then stopped as pods, so that their logs stay); deleted past podRetention
# (all of a study's at once when it is deleted); listed and watched to follow the trials.
- apiGroups: [batch]
  resources: [jobs]
  verbs: [create, get, delete, deletecollection, list, watch]
# The headless Service of a distributed trial's rendezvous, created with its Job and deleted
# with it.
- apiGroups: [""]
  resources: [services]
  verbs: [create, delete]
{{- end }}
{{- if .Values.prometheus.readCredentials }}
# A study with a Prometheus metrics source: its bearer token (a Secret) and CA bundle (a
# ConfigMap or Secret), read by name in the study's namespace (prometheus.readCredentials).
- apiGroups: [""]
  resources: [configmaps, secrets]
  verbs: [get]
{{- end }}
# The events on studies (TrialCreated, NewBest, StudyCompleted, ...).
- apiGroups: [""]
  resources: [events]
  verbs: [create]
# Studies: listed and watched (the daemons read them from the watch); patched by kopf
# (finalizer, progress annotations).
- apiGroups: [kubetune.io]
  resources: [tuningstudies]
  verbs: [list, patch, watch]
# Trials: created per trial and watched.
- apiGroups: [kubetune.io]
  resources: [tuningtrials]
  verbs: [create, list, watch]
# Their status: counters, best trial, each trial's values.
- apiGroups: [kubetune.io]
  resources: [tuningstudies/status, tuningtrials/status]
  verbs: [patch]
{{- end }}

{{/* Labels of the dashboard's objects (dashboard.enabled). */}}
{{- define "kubetune.dashboardLabels" -}}
{{ include "kubetune.baseLabels" . }}
app.kubernetes.io/component: dashboard
{{- end }}

{{- define "kubetune.dashboardSelectorLabels" -}}
app.kubernetes.io/name: {{ include "kubetune.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: dashboard
{{- end }}

{{- define "kubetune.dashboardName" -}}
{{- printf "%s-dashboard" (include "kubetune.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kubetune.dashboardServiceAccountName" -}}
{{- default (include "kubetune.dashboardName" .) .Values.dashboard.serviceAccount.name }}
{{- end }}

{{/* The one namespace the dashboard reads (`kubetune dashboard --namespace`), or "" for
every namespace. `kubetune dashboard` reads one namespace or all of them, so with several
watched namespaces dashboard.namespace must name one. */}}
{{- define "kubetune.dashboardNamespace" -}}
{{- $chosen := .Values.dashboard.namespace }}
{{- $watched := uniq .Values.watch.namespaces }}
{{- if $chosen }}
{{- if and $watched (not (has $chosen $watched)) }}
{{- fail (printf "dashboard.namespace %q is not watched by the operator: set it to one of watch.namespaces (%s)" $chosen (join ", " $watched)) }}
{{- end }}
{{- $chosen }}
{{- else if eq (len $watched) 1 }}
{{- first $watched }}
{{- else if $watched }}
{{- fail (printf "dashboard.namespace is empty but the operator watches several namespaces (%s), and `kubetune dashboard` reads one or all: set dashboard.namespace to one of them" (join ", " $watched)) }}
{{- end }}
{{- end }}
