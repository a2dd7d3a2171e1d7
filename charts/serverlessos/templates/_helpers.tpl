{{/*
The chart's name: the chart name, or .Values.nameOverride.
*/}}
{{- define "serverlessos.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
A fully qualified app name, at most 63 characters (DNS label limit): the release
name, with the chart name appended unless the release name already contains it.
*/}}
{{- define "serverlessos.fullname" -}}
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

{{/*
"name-version" for the helm.sh/chart label.
*/}}
{{- define "serverlessos.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels common to every object the chart creates.
*/}}
{{- define "serverlessos.labels" -}}
helm.sh/chart: {{ include "serverlessos.chart" . }}
app.kubernetes.io/name: {{ include "serverlessos.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: serverlessos
{{- end }}

{{/*
Selector labels of the operator pod (immutable once installed: keep them few).
*/}}
{{- define "serverlessos.operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "serverlessos.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/*
Selector labels of the agent pods. The operator, not the chart, creates the
agent DaemonSet (operator/serverlessos_operator/daemonset.py) and labels its
pods with exactly this.
*/}}
{{- define "serverlessos.agent.selectorLabels" -}}
app.kubernetes.io/name: serverlessos-agent
{{- end }}

{{/*
Name of the operator's ServiceAccount.
*/}}
{{- define "serverlessos.operator.serviceAccountName" -}}
{{- default (printf "%s-operator" (include "serverlessos.fullname" .)) .Values.serviceAccount.operator.name }}
{{- end }}

{{/*
Name of the agents' ServiceAccount: fixed, the operator's DaemonSet names it.
*/}}
{{- define "serverlessos.agent.serviceAccountName" -}}
{{- .Values.serviceAccount.agent.name }}
{{- end }}

{{/*
image: "repository:tag", the tag defaulting to the chart's appVersion.
Call with (dict "image" .Values.x.image "context" $).
*/}}
{{- define "serverlessos.image" -}}
{{- printf "%s:%s" .image.repository (toString (default .context.Chart.AppVersion .image.tag)) }}
{{- end }}
