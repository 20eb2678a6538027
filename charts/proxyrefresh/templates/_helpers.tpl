{{- define "proxyrefresh.name" -}}
{{- .Values.nameOverride | default .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- /* fullnameOverride, else <release>-<name>, always: the common charts
drop the release name when it holds the chart's, but here that would
rename an installed release's objects on upgrade (its bundled Redis's
Secret and volume among them). */ -}}
{{- define "proxyrefresh.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "proxyrefresh.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "proxyrefresh.labels" -}}
app.kubernetes.io/name: {{ include "proxyrefresh.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "proxyrefresh.selector" -}}
app.kubernetes.io/name: {{ include "proxyrefresh.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "proxyrefresh.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "proxyrefresh.operatorServiceAccount" -}}
{{- .Values.serviceAccount.name | default (printf "%s-operator" (include "proxyrefresh.fullname" .)) -}}
{{- end -}}

{{- define "proxyrefresh.workerServiceAccount" -}}
{{- .Values.worker.serviceAccount.name | default (printf "%s-worker" (include "proxyrefresh.fullname" .)) -}}
{{- end -}}

{{- define "proxyrefresh.redisSecret" -}}
{{- .Values.redis.existingSecret | default (printf "%s-redis" (include "proxyrefresh.fullname" .)) -}}
{{- end -}}

{{- /* Every pod's security context: the chart's (non-root, the image's
user, RuntimeDefault seccomp) with podSecurityContext laid over it. */ -}}
{{- define "proxyrefresh.podSecurityContext" -}}
{{- $default := dict "runAsNonRoot" true "runAsUser" 65532 "runAsGroup" 65532 "seccompProfile" (dict "type" "RuntimeDefault") -}}
{{- toYaml (mergeOverwrite $default (.Values.podSecurityContext | default dict)) -}}
{{- end -}}

{{- /* priorityClassName for every pod of the chart (included only when set). */ -}}
{{- define "proxyrefresh.priorityClass" -}}
priorityClassName: {{ .Values.priorityClassName | quote }}
{{- end -}}

{{- /* Pod spec lines for hostNetwork.enabled: the node's network, names
still through the cluster's DNS. */ -}}
{{- define "proxyrefresh.podNetwork" -}}
{{- if .Values.hostNetwork.enabled }}
hostNetwork: true
dnsPolicy: ClusterFirstWithHostNet
{{- end }}
{{- end -}}

{{- /* Env entries for a container that calls the API server: where to find
it when the `kubernetes` Service's ClusterIP is not routed on the node. */ -}}
{{- define "proxyrefresh.apiServerEnv" -}}
{{- with .Values.hostNetwork.apiServer }}
- name: KUBERNETES_SERVICE_HOST
  value: {{ (splitList ":" .) | first | quote }}
- name: KUBERNETES_SERVICE_PORT
  value: {{ (splitList ":" .) | last | quote }}
{{- end }}
{{- end -}}

{{- /* rediss:// with a CA of one's own: every Redis client of the chart
reads the PEM bundle from the Secret (the operator hands it on to its
workers as text: they run in tenants' namespaces, where the Secret is not). */ -}}
{{- define "proxyrefresh.redisTlsEnv" -}}
{{- $env := list -}}
{{- with .Values.redis.tls.caSecret -}}
{{- $ref := dict "secretKeyRef" (dict "name" . "key" $.Values.redis.tls.caSecretKey) -}}
{{- $env = append $env (dict "name" "PROXYREFRESH_REDIS_CA_DATA" "valueFrom" $ref) -}}
{{- end -}}
{{- with .Values.redis.sentinel.passwordSecret -}}
{{- $ref := dict "secretKeyRef" (dict "name" . "key" $.Values.redis.sentinel.passwordSecretKey) -}}
{{- $env = append $env (dict "name" "PROXYREFRESH_REDIS_SENTINEL_PASSWORD" "valueFrom" $ref) -}}
{{- end -}}
{{- if $env }}{{ toYaml $env }}{{ end -}}
{{- end -}}

{{- /* Every container's: no privileges, a read-only root, no capabilities,
with securityContext laid over it. */ -}}
{{- define "proxyrefresh.securityContext" -}}
{{- $default := dict "allowPrivilegeEscalation" false "readOnlyRootFilesystem" true "privileged" false "capabilities" (dict "drop" (list "ALL")) -}}
{{- toYaml (mergeOverwrite $default (.Values.securityContext | default dict)) -}}
{{- end -}}

{{- /* The namespaces the operator watches, as a JSON list: watchNamespaces, or
the release namespace; empty only for an explicit operator.clusterWide. */ -}}
{{- define "proxyrefresh.watchNamespaces" -}}
{{- if .Values.operator.clusterWide -}}
{{- .Values.operator.watchNamespaces | default list | toJson -}}
{{- else -}}
{{- .Values.operator.watchNamespaces | default (list .Release.Namespace) | toJson -}}
{{- end -}}
{{- end -}}

{{/* Egress to anywhere public: not the metadata address, nor networkPolicy.workerDeniedCIDRs. */}}
{{- define "proxyrefresh.publicEgress" -}}
- to:
    - ipBlock:
        cidr: 0.0.0.0/0
        except:
          - 169.254.0.0/16
          {{- range $.Values.networkPolicy.workerDeniedCIDRs }}
          {{- if not (contains ":" .) }}
          - {{ . }}
          {{- end }}
          {{- end }}
    - ipBlock:
        cidr: ::/0
        except:
          - fe80::/10
          - fd00:ec2::254/128
          {{- range $.Values.networkPolicy.workerDeniedCIDRs }}
          {{- if contains ":" . }}
          - {{ . }}
          {{- end }}
          {{- end }}
{{- end -}}

{{/* "true" when the chart runs its own Redis: bundled.enabled (the default)
and no other Redis named by url or existingSecret. */}}
{{- define "proxyrefresh.bundledRedis" -}}
{{- if and .Values.redis.bundled.enabled (not .Values.redis.url) (not .Values.redis.existingSecret) -}}
true
{{- end -}}
{{- end }}

{{- /* The page's own read-only Redis user, kept by the operator
(operator/viewer_access.py): when the page is on and no URL of the user's
own is named, and the operator makes Redis users at all. */ -}}
{{- define "proxyrefresh.viewerSecret" -}}
{{- if and .Values.ui.enabled (not .Values.ui.redis.existingSecret) .Values.worker.redisAcl -}}
{{ include "proxyrefresh.fullname" . }}-viewer
{{- end -}}
{{- end -}}
