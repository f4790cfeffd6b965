{{/* The image: by digest when given, else by tag (default: the chart's appVersion). */}}
{{- define "tscsi.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{/* Labels on every object: kustomize's part-of (deploy/base) and Helm's own. */}}
{{- define "tscsi.labels" -}}
app.kubernetes.io/part-of: tscsi
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{/* A container's image lines; dict: root, name (its resources are looked up in res). */}}
{{- define "tscsi.containerImage" -}}
image: {{ include "tscsi.image" . }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
{{- end -}}

{{/* resources: of one container, when any is set. dict: res (the map), name. */}}
{{- define "tscsi.resources" -}}
{{- with index .res .name }}
resources:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* The pod-scheduling fields of a workload; dict: pod values (node or controller), root. */}}
{{- define "tscsi.scheduling" -}}
{{- with .pod.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .pod.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .pod.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .pod.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/*
Objects kept once, in deploy/base (files/base links there), for both install paths: each
YAML document of the file with the namespace "tscsi" made the release's (metadata, RBAC
subjects, the service account names in the admission policies' CEL) and the chart's labels.
*/}}
{{- define "tscsi.baseFile" -}}
{{- $root := .root }}
{{- $ns := $root.Release.Namespace }}
{{- $text := $root.Files.Get (printf "files/base/%s" .file) }}
{{- $text = regexReplaceAll "namespace: tscsi\\b" $text (printf "namespace: %s" $ns) }}
{{- $text = replace "system:serviceaccount:tscsi:" (printf "system:serviceaccount:%s:" $ns) $text }}
{{- range $doc := regexSplit "(?m)^---\\s*$" $text -1 }}
{{- $o := fromYaml $doc }}
{{- if $o.kind }}
{{- $_ := set $o.metadata "labels" (merge (include "tscsi.labels" $root | fromYaml) ($o.metadata.labels | default dict)) }}
---
{{ toYaml $o }}
{{- end }}
{{- end }}
{{- end -}}
