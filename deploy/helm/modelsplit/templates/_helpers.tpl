{{- define "modelsplit.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "modelsplit.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "modelsplit.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modelsplit.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: {{ ternary "gateway" "control-plane" (eq .Values.mode "gateway") }}
{{- end -}}

{{- define "modelsplit.labels" -}}
{{ include "modelsplit.selectorLabels" . }}
{{ include "modelsplit.commonLabels" . }}
{{- end -}}

{{- define "modelsplit.redisSelectorLabels" -}}
app.kubernetes.io/name: {{ include "modelsplit.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: redis
{{- end -}}

{{- define "modelsplit.commonLabels" -}}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "modelsplit.tokenSecret" -}}
{{- if .Values.admin.existingSecret -}}
{{- .Values.admin.existingSecret -}}
{{- else -}}
{{- printf "%s-admin-token" (include "modelsplit.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "modelsplit.serviceAccount" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "modelsplit.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "modelsplit.redisURL" -}}
{{- if .Values.redis.enabled -}}
{{- printf "redis://%s-redis:6379/0" (include "modelsplit.fullname" .) -}}
{{- else -}}
{{- .Values.redis.url -}}
{{- end -}}
{{- end -}}

{{/* modelsplit's config file: the user's config with listen, admin and store set by the chart. */}}
{{- define "modelsplit.config" -}}
{{- $full := include "modelsplit.fullname" . -}}
{{- $cfg := deepCopy (default dict .Values.config) -}}
{{- $inner := ternary "127.0.0.1" "0.0.0.0" (eq .Values.mode "gateway") -}}
{{- $_ := set $cfg "listen" (dict "xds" (printf "%s:%v" $inner .Values.ports.xds) "extproc" (printf "%s:%v" $inner .Values.ports.extproc) "admin" (printf "0.0.0.0:%v" .Values.ports.admin)) -}}
{{- $hosts := list $full (printf "%s.%s" $full .Release.Namespace) (printf "%s.%s.svc" $full .Release.Namespace) (printf "%s.%s.svc.cluster.local" $full .Release.Namespace) -}}
{{- $admin := dict "token_file" "/etc/modelsplit/token/token" "allowed_hosts" (concat $hosts .Values.admin.allowedHosts) -}}
{{- $redis := include "modelsplit.redisURL" . -}}
{{- if not $redis -}}
{{- $_ := set $admin "state_file" "/var/lib/modelsplit/state.json" -}}
{{- end -}}
{{- $_ := set $cfg "admin" $admin -}}
{{- $store := deepCopy (default dict (get $cfg "store")) -}}
{{- if $redis -}}
{{- $_ := set $store "redis" $redis -}}
{{- $_ := set $cfg "store" $store -}}
{{- end -}}
{{- $gw := deepCopy (default dict (get $cfg "gateway")) -}}
{{- if eq .Values.mode "gateway" -}}
{{- $_ := set $gw "port" .Values.gateway.port -}}
{{- else if not (hasKey $gw "extproc_address") -}}
{{- $_ := set $gw "extproc_address" (printf "%s.%s.svc:%v" $full .Release.Namespace .Values.ports.extproc) -}}
{{- end -}}
{{- if $gw -}}
{{- $_ := set $cfg "gateway" $gw -}}
{{- end -}}
{{- toYaml $cfg -}}
{{- end -}}
