{{- define "modelgate.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "modelgate.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "modelgate.labels" -}}
app.kubernetes.io/name: {{ include "modelgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "modelgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modelgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- /* "true" when the admin listener may leave the pod's loopback: a token,
or mutual TLS, guards it. */ -}}
{{- define "modelgate.adminExposed" -}}
{{- if and .Values.admin.tls.clientCASecret (not .Values.admin.tls.secretName) -}}
{{- fail "admin.tls.clientCASecret (mutual TLS) needs admin.tls.secretName" -}}
{{- end -}}
{{- if or .Values.admin.tokenSecret .Values.admin.tls.clientCASecret -}}
true
{{- end -}}
{{- end -}}

{{- /* TLS on the gRPC port: a client CA alone would be dropped without a
word (no certificate to serve TLS with), so the render fails instead, like
its admin-side counterpart. */ -}}
{{- define "modelgate.checkTLS" -}}
{{- if and .Values.tls.clientCASecret (not .Values.tls.secretName) -}}
{{- fail "tls.clientCASecret (mutual TLS) needs tls.secretName" -}}
{{- end -}}
{{- end -}}

{{- /* The probe handler: gRPC health, or the TCP port when it speaks TLS. */ -}}
{{- define "modelgate.probe" -}}
{{- if .Values.tls.secretName -}}
tcpSocket:
  port: {{ .Values.service.grpcPort }}
{{- else -}}
grpc:
  port: {{ .Values.service.grpcPort }}
{{- end -}}
{{- end -}}

{{- define "modelgate.fleet" -}}
{{- if or (gt (int .Values.replicaCount) 1) .Values.autoscaling.enabled -}}
{{- if not .Values.fleet.etcd.endpoints -}}
{{- fail "more than one replica (replicaCount > 1 or autoscaling.enabled) needs fleet.etcd.endpoints: replicas must share rollout state" -}}
{{- end -}}
{{- end -}}
{{- if .Values.fleet.etcd.endpoints -}}
{{- $prefix := .Values.fleet.etcd.prefix | default (printf "/modelgate/%s" .Release.Name) -}}
{{- printf "etcd://%s%s" (join "," .Values.fleet.etcd.endpoints) $prefix -}}
{{- end -}}
{{- end -}}
