{{/*
Chart name, truncated to 63 characters (a DNS label).
*/}}
{{- define "imagebloat.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: <release>-<chart>, or the release name when it already contains the chart name.
*/}}
{{- define "imagebloat.fullname" -}}
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

{{- define "imagebloat.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object.
*/}}
{{- define "imagebloat.labels" -}}
helm.sh/chart: {{ include "imagebloat.chart" . }}
{{ include "imagebloat.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: imagebloat
{{- end }}

{{/*
Labels that select the operator Pods (Deployment selector, Service, NetworkPolicy).
*/}}
{{- define "imagebloat.selectorLabels" -}}
app.kubernetes.io/name: {{ include "imagebloat.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "imagebloat.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "imagebloat.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The image: repository:tag, or repository:tag@digest when a digest pins it.
*/}}
{{- define "imagebloat.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/*
"true" when leader election is on: asked for, or more than one replica.
*/}}
{{- define "imagebloat.leaderElect" -}}
{{- if or .Values.leaderElection.enabled (gt (int .Values.replicaCount) 1) }}true{{ end }}
{{- end }}

{{- define "imagebloat.leaseName" -}}
{{- default (printf "%s-leader" (include "imagebloat.fullname" .)) .Values.leaderElection.leaseName }}
{{- end }}

{{/*
Namespaces that get a Role with `get` on Secrets when rbac.secrets=namespaces.
*/}}
{{- define "imagebloat.secretNamespaces" -}}
{{- $namespaces := .Values.rbac.secretNamespaces | default .Values.operator.namespaces }}
{{- if not $namespaces }}
{{- fail "rbac.secrets=namespaces needs rbac.secretNamespaces (or operator.namespaces) to name the namespaces whose pull secrets the operator may read" }}
{{- end }}
{{- toJson (uniq $namespaces) }}
{{- end }}

{{/*
Bytes as a human-readable size with binary prefixes (1073741824 -> "1 GiB"), for alert texts.
*/}}
{{- define "imagebloat.humanBytes" -}}
{{- $b := float64 . }}
{{- $units := list "B" "KiB" "MiB" "GiB" "TiB" "PiB" }}
{{- $i := 0 }}
{{- range $n := until 5 }}
{{- if ge $b 1024.0 }}
{{- $b = divf $b 1024.0 }}
{{- $i = add1 $i }}
{{- end }}
{{- end }}
{{- $text := printf "%.1f" $b | trimSuffix ".0" }}
{{- printf "%s %s" $text (index $units $i) }}
{{- end }}

{{/*
A ratio as a percentage for alert texts (0.3 -> "30%").
*/}}
{{- define "imagebloat.percent" -}}
{{- printf "%.4g%%" (mulf (float64 .) 100.0) }}
{{- end }}

{{/*
A size value for a flag: a string ("64GiB") as it is, a number as whole bytes (YAML numbers reach
templates as floats, and 68719476736 would otherwise print as 6.8719476736e+10).
*/}}
{{- define "imagebloat.size" -}}
{{- if kindIs "string" . }}{{ . }}{{ else }}{{ int64 . }}{{ end }}
{{- end }}
