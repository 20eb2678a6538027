{{- define "proxyrefresh.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "proxyrefresh.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "proxyrefresh.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
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

{{- define "proxyrefresh.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
seccompProfile:
  type: RuntimeDefault
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

{{- define "proxyrefresh.securityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: ["ALL"]
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
