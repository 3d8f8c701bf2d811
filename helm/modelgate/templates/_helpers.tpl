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

{{- /* A value for a sink URL's query: YAML numbers reach templates as
float64, which would print as 1e+06. */ -}}
{{- define "modelgate.queryValue" -}}
{{- if kindIs "float64" . -}}
{{- . | int64 | toString | urlquery -}}
{{- else -}}
{{- . | toString | urlquery -}}
{{- end -}}
{{- end -}}

{{- /* security.protocol of the Kafka sink. */ -}}
{{- define "modelgate.kafkaProtocol" -}}
{{- $k := .Values.records.kafka -}}
{{- if $k.sasl.mechanism -}}
{{- ternary "sasl_ssl" "sasl_plaintext" $k.tls.enabled -}}
{{- else -}}
{{- ternary "ssl" "plaintext" $k.tls.enabled -}}
{{- end -}}
{{- end -}}

{{- /* The record sinks' flags as args lines: a --records URL per enabled
sink, the queue, and the Kafka TLS/SASL flags (file paths and names only;
the SASL password and storage keys come through env secretKeyRef). Values
that cannot work fail the render naming what is missing. */ -}}
{{- define "modelgate.recordsArgs" -}}
{{- $r := .Values.records -}}
{{- if not (or $r.file.enabled $r.kafka.enabled $r.parquet.enabled) -}}
{{- fail "records.file.enabled: false needs records.kafka or records.parquet enabled: the gateway always writes shadow records somewhere" -}}
{{- end -}}
{{- if $r.file.enabled }}
- {{ printf "--records=file://%s/shadow" .Values.state.mountPath | quote }}
{{- end -}}
{{- with $r.kafka -}}
{{- if .enabled -}}
{{- if not .brokers -}}
{{- fail "records.kafka.enabled needs records.kafka.brokers (host:port)" -}}
{{- end -}}
{{- if not .topic -}}
{{- fail "records.kafka.enabled needs records.kafka.topic" -}}
{{- end -}}
{{- $query := list (printf "compression=%s" (urlquery .compression)) -}}
{{- range $key, $value := .options -}}
{{- $query = append $query (printf "%s=%s" (urlquery $key) (include "modelgate.queryValue" $value)) -}}
{{- end }}
- {{ printf "--records=kafka://%s/%s?%s" (join "," .brokers) (urlquery .topic) (join "&" $query) | quote }}
{{- if or .tls.enabled .sasl.mechanism }}
- {{ printf "--kafka-security-protocol=%s" (include "modelgate.kafkaProtocol" $) | quote }}
{{- end -}}
{{- if and .tls.secretName (not .tls.enabled) -}}
{{- fail "records.kafka.tls.secretName needs records.kafka.tls.enabled" -}}
{{- end -}}
{{- if and .tls.clientCertificate (not .tls.secretName) -}}
{{- fail "records.kafka.tls.clientCertificate needs records.kafka.tls.secretName (tls.crt, tls.key)" -}}
{{- end -}}
{{- if .tls.secretName }}
- "--kafka-ssl-ca=/etc/modelgate/kafka-tls/ca.crt"
{{- if .tls.clientCertificate }}
- "--kafka-ssl-cert=/etc/modelgate/kafka-tls/tls.crt"
- "--kafka-ssl-key=/etc/modelgate/kafka-tls/tls.key"
{{- end -}}
{{- end -}}
{{- if .sasl.mechanism -}}
{{- if not .sasl.username -}}
{{- fail "records.kafka.sasl.mechanism needs records.kafka.sasl.username" -}}
{{- end -}}
{{- if not .sasl.passwordSecret.name -}}
{{- fail "records.kafka.sasl.mechanism needs records.kafka.sasl.passwordSecret.name (a secret holding the password)" -}}
{{- end }}
- {{ printf "--kafka-sasl-mechanism=%s" .sasl.mechanism | quote }}
- {{ printf "--kafka-sasl-username=%s" .sasl.username | quote }}
{{- end -}}
{{- end -}}
{{- end -}}
{{- with $r.parquet -}}
{{- if .enabled -}}
{{- $scheme := include "modelgate.parquetScheme" $ -}}
{{- $query := list -}}
{{- range $key, $value := dict "max_rows" .maxRows "max_bytes" .maxBytes "max_open" .maxOpen "timeout" .timeout -}}
{{- $query = append $query (printf "%s=%s" $key (include "modelgate.queryValue" $value)) -}}
{{- end -}}
{{- if and .region (ne $scheme "s3") -}}
{{- fail (printf "records.parquet.region is for s3:// URLs, not %s" .url) -}}
{{- end -}}
{{- if or .region .endpoint .allowHttp -}}
{{- if eq $scheme "file" -}}
{{- fail (printf "records.parquet.endpoint and allowHttp are for object stores, not %s" .url) -}}
{{- end -}}
{{- with .region -}}
{{- $query = append $query (printf "region=%s" (urlquery .)) -}}
{{- end -}}
{{- with .endpoint -}}
{{- $query = append $query (printf "endpoint=%s" (urlquery .)) -}}
{{- end -}}
{{- if .allowHttp -}}
{{- $query = append $query "allow_http=true" -}}
{{- end -}}
{{- end }}
- {{ printf "--records=%s%s%s" .url (ternary "&" "?" (contains "?" .url)) (join "&" $query) | quote }}
{{- end -}}
{{- end }}
- {{ printf "--records-queue=%d" ($r.queue | int64) | quote }}
{{- end -}}

{{- /* The Parquet sink's provider: s3, gs, az or file; fails on anything
else, and on credentials for another provider (the sink reads only its
provider's variables, so they would be ignored without a word). */ -}}
{{- define "modelgate.parquetScheme" -}}
{{- $p := .Values.records.parquet -}}
{{- if not $p.url -}}
{{- fail "records.parquet.enabled needs records.parquet.url (s3://bucket/prefix, gs://…, az://… or parquet+file:///dir)" -}}
{{- end -}}
{{- $raw := trimPrefix "parquet+" (first (splitList "://" $p.url)) -}}
{{- $scheme := "" -}}
{{- $prefix := "" -}}
{{- if has $raw (list "s3" "s3a") -}}
{{- $scheme = "s3" -}}{{- $prefix = "AWS_" -}}
{{- else if eq $raw "gs" -}}
{{- $scheme = "gs" -}}{{- $prefix = "GOOGLE_" -}}
{{- else if has $raw (list "az" "adl" "azure" "abfs" "abfss") -}}
{{- $scheme = "az" -}}{{- $prefix = "AZURE_" -}}
{{- else if and (eq $raw "file") (hasPrefix "parquet+" $p.url) -}}
{{- $scheme = "file" -}}
{{- else -}}
{{- fail (printf "records.parquet.url %q: expected s3://, gs://, az:// or parquet+file://" $p.url) -}}
{{- end -}}
{{- range $name, $key := $p.credentials.env -}}
{{- if or (not $prefix) (not (hasPrefix $prefix $name)) -}}
{{- fail (printf "records.parquet.credentials.env: %s is not read for %s (the sink reads %s variables)" $name $p.url (default "no" $prefix)) -}}
{{- end -}}
{{- end -}}
{{- if and $p.credentials.env (not $p.credentials.secretName) -}}
{{- fail "records.parquet.credentials.env needs records.parquet.credentials.secretName" -}}
{{- end -}}
{{- $scheme -}}
{{- end -}}
