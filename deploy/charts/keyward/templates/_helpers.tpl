{{/* The release's full name: the release name when it already says keyward, else <release>-keyward. */}}
{{- define "keyward.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "keyward.fullname" -}}
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

{{- define "keyward.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "keyward.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: keyward
{{- end -}}

{{- define "keyward.selectorLabels" -}}
app.kubernetes.io/name: {{ include "keyward.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The operator's pods. */}}
{{- define "keyward.podSelectorLabels" -}}
{{ include "keyward.selectorLabels" . }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "keyward.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "keyward.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name: name the existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "keyward.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "keyward.hsmSecretName" -}}
{{- default (printf "%s-hsm" (include "keyward.fullname" .)) .Values.hsm.existingSecret -}}
{{- end -}}

{{- define "keyward.tokenClaimName" -}}
{{- default (printf "%s-tokens" (include "keyward.fullname" .)) .Values.token.persistentVolumeClaim.existingClaim -}}
{{- end -}}

{{/* host:port for a listener. */}}
{{- define "keyward.listen" -}}
{{- $host := .root.Values.operator.bindAddress -}}
{{- if contains ":" $host -}}
{{- printf "[%s]:%v" $host .port -}}
{{- else -}}
{{- printf "%s:%v" $host .port -}}
{{- end -}}
{{- end -}}
