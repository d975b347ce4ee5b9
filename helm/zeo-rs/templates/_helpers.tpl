{{/*
Names, labels and the few values that several templates must agree on. Every cross-reference
between objects (Service selectors, the Lease name, addresses, the test command) comes from here.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "zeo-rs.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every resource name: fullnameOverride, else the release name if it already contains
the chart name, else <release>-<chart name>. Kept to 40 characters so that the longest suffix
("-headless", and "-N" plus the StatefulSet's pod hash label) stays within 63.
*/}}
{{- define "zeo-rs.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The helm.sh/chart label. */}}
{{- define "zeo-rs.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "zeo-rs.labels" -}}
helm.sh/chart: {{ include "zeo-rs.chart" . }}
app.kubernetes.io/name: {{ include "zeo-rs.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: zeo-rs
{{- end }}

{{/* Selector labels shared by every component (add app.kubernetes.io/component). */}}
{{- define "zeo-rs.selectorLabels" -}}
app.kubernetes.io/name: {{ include "zeo-rs.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Selector labels of the server pods (StatefulSet, PDB, headless Service). */}}
{{- define "zeo-rs.serverSelectorLabels" -}}
{{ include "zeo-rs.selectorLabels" . }}
app.kubernetes.io/component: server
{{- end }}

{{/* Selector labels of the app pods. */}}
{{- define "zeo-rs.appSelectorLabels" -}}
{{ include "zeo-rs.selectorLabels" . }}
app.kubernetes.io/component: app
{{- end }}

{{/*
The pod label the supervisor writes on its own pod (ZEO_SUPERVISOR_ROLE_LABEL), and its two values.
The primary and read-only Services select on it.
*/}}
{{- define "zeo-rs.roleLabel" -}}role{{- end }}

{{/* Object names. */}}
{{- define "zeo-rs.headlessName" -}}{{ include "zeo-rs.fullname" . }}-headless{{- end }}
{{- define "zeo-rs.primaryName" -}}{{ include "zeo-rs.fullname" . }}-primary{{- end }}
{{- define "zeo-rs.readOnlyName" -}}{{ include "zeo-rs.fullname" . }}-ro{{- end }}
{{- define "zeo-rs.appName" -}}{{ include "zeo-rs.fullname" . }}-app{{- end }}
{{- define "zeo-rs.leaseName" -}}{{ include "zeo-rs.fullname" . }}-leader{{- end }}
{{- define "zeo-rs.serverConfigName" -}}{{ include "zeo-rs.fullname" . }}-server{{- end }}
{{- define "zeo-rs.supervisorConfigName" -}}{{ include "zeo-rs.fullname" . }}-supervisor{{- end }}

{{/* The ServiceAccount the supervisor uses. */}}
{{- define "zeo-rs.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "zeo-rs.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret holding the admin token, ours or the user's. */}}
{{- define "zeo-rs.secretName" -}}
{{- if .Values.auth.existingSecret }}
{{- .Values.auth.existingSecret }}
{{- else }}
{{- include "zeo-rs.fullname" . }}-admin-token
{{- end }}
{{- end }}

{{/* The admin token file, in both containers. */}}
{{- define "zeo-rs.tokenFile" -}}/secrets/admin-token{{- end }}

{{/* Where ZEO clients reach the primary: <primary Service>.<namespace>.svc:<port>. */}}
{{- define "zeo-rs.primaryAddress" -}}
{{ include "zeo-rs.primaryName" . }}.{{ .Release.Namespace }}.svc:{{ .Values.service.primary.port }}
{{- end }}

{{/*
An image reference; call with (list $imageValues $). global.imageRegistry, when set, is prefixed
(`<registry>/<repository>:<tag>`), so one value points every image at a registry.
*/}}
{{- define "zeo-rs.image" -}}
{{- $img := index . 0 }}{{- $root := index . 1 }}
{{- $ref := printf "%s:%s" $img.repository (default $root.Chart.AppVersion $img.tag) }}
{{- with $root.Values.global.imageRegistry }}
{{- printf "%s/%s" (trimSuffix "/" .) $ref }}
{{- else }}
{{- $ref }}
{{- end }}
{{- end }}

{{/* The supervisor's HTTP port (ZEO_SUPERVISOR_LISTEN, ZEO_SUPERVISOR_URL, probes, preStop). */}}
{{- define "zeo-rs.supervisorPort" -}}8110{{- end }}

{{/*
The supervisor endpoint that answers 200 once this member has handed the primary role over after
SIGTERM (or never held it): what the server's preStop hook waits on.
*/}}
{{- define "zeo-rs.handoverPath" -}}/handover{{- end }}

{{/* The server pods' names, in order, as a comma-separated list. */}}
{{- define "zeo-rs.members" -}}
{{- $full := include "zeo-rs.fullname" . }}
{{- $pods := list }}
{{- range $i := until (int .Values.server.replicas) }}
{{- $pods = append $pods (printf "%s-%d" $full $i) }}
{{- end }}
{{- join "," $pods }}
{{- end }}

{{/*
The DNS names in a member's replication certificate: the pod name (its identity, also the CN)
and its pod DNS names through the headless Service. Call with (list $pod $).
*/}}
{{- define "zeo-rs.memberDNSNames" -}}
{{- $pod := index . 0 }}{{- $root := index . 1 }}
{{- $host := printf "%s.%s.%s.svc" $pod (include "zeo-rs.headlessName" $root) $root.Release.Namespace }}
{{- list $pod $host (printf "%s.cluster.local" $host) | toJson }}
{{- end }}

{{/* Where the replication certificates are mounted in the server container. */}}
{{- define "zeo-rs.replicationTlsDir" -}}/replication-tls{{- end }}

{{/*
The Secret with ca.crt and <pod>.crt/<pod>.key of every member (source generate or
existingSecret), and the one holding the generated CA's key (never mounted).
*/}}
{{- define "zeo-rs.replicationTlsSecretName" -}}
{{- if eq .Values.replication.tls.source "existingSecret" }}
{{- .Values.replication.tls.existingSecret }}
{{- else }}
{{- include "zeo-rs.fullname" . }}-replication-tls
{{- end }}
{{- end }}
{{- define "zeo-rs.replicationCaSecretName" -}}{{ include "zeo-rs.fullname" . }}-replication-ca{{- end }}
{{/* The Secret cert-manager writes for member $i; call with (list $i $). */}}
{{- define "zeo-rs.memberCertSecretName" -}}
{{- printf "%s-replication-%d" (include "zeo-rs.fullname" (index . 1)) (index . 0) }}
{{- end }}

{{/*
The helm test's zeo-load arguments: the one place the test command is written (zeo-load's flags
may still change). --verify reads every acknowledged write back and exits 3 if one is missing.
The objects it writes are not referenced from the root, so a pack's GC removes them.
*/}}
{{- define "zeo-rs.testLoadArgs" -}}
- --storage
- {{ include "zeo-rs.primaryAddress" . }}
- --duration
- {{ .Values.tests.duration | quote }}
- --verify
{{- end }}

{{/*
An httpGet probe; call with (dict "probe" $probeValues "path" "/livez" "port" "admin").
*/}}
{{- define "zeo-rs.httpProbe" -}}
httpGet:
  path: {{ .path }}
  port: {{ .port }}
periodSeconds: {{ .probe.periodSeconds }}
timeoutSeconds: {{ .probe.timeoutSeconds }}
failureThreshold: {{ .probe.failureThreshold }}
{{- end }}

{{/*
Checks that cut across values; a failed one stops the render with a message naming the values.
*/}}
{{- define "zeo-rs.validate" -}}
{{- $r := .Values.replication }}
{{- if ge (int $r.syncStandbys) (int .Values.server.replicas) }}
{{- fail (printf "replication.syncStandbys (%d) must be below server.replicas (%d): a primary cannot wait for itself" (int $r.syncStandbys) (int .Values.server.replicas)) }}
{{- end }}
{{- if and $r.syncTimeout (eq (int $r.syncStandbys) 0) }}
{{- fail "replication.syncTimeout needs replication.syncStandbys > 0 (it bounds the wait for standbys)" }}
{{- end }}
{{- if ge (int .Values.server.shutdownGraceSeconds) (int .Values.terminationGracePeriodSeconds) }}
{{- fail "server.shutdownGraceSeconds must be below terminationGracePeriodSeconds" }}
{{- end }}
{{- if and .Values.tls.enabled (not .Values.tls.secretName) }}
{{- fail "tls.enabled needs tls.secretName (a Secret with the certificate, its key and the client CA)" }}
{{- end }}
{{- if ge (add (int .Values.server.handoverTimeoutSeconds) (int .Values.server.shutdownGraceSeconds)) (int .Values.terminationGracePeriodSeconds) }}
{{- fail "server.handoverTimeoutSeconds + server.shutdownGraceSeconds must be below terminationGracePeriodSeconds (the preStop wait and the drain share the grace period)" }}
{{- end }}
{{- $rt := .Values.replication.tls }}
{{- if and $rt.enabled (eq $rt.source "existingSecret") (not $rt.existingSecret) }}
{{- fail "replication.tls.source=existingSecret needs replication.tls.existingSecret" }}
{{- end }}
{{- if and $rt.enabled (eq $rt.source "certManager") (not $rt.certManager.issuerRef.name) }}
{{- fail "replication.tls.source=certManager needs replication.tls.certManager.issuerRef.name" }}
{{- end }}
{{- if hasKey .Values.podLabels (include "zeo-rs.roleLabel" .) }}
{{- fail "podLabels must not set the role label: the supervisor owns it" }}
{{- end }}
{{- end }}

{{/*
The admin token of the Secret we create: auth.token if given, else the one already in the cluster
(kept across upgrades; `lookup` renders empty offline, e.g. `helm template`), else a new random one.
Computed once per render and memoized, so the Secret and the pods' checksum annotation agree.
*/}}
{{- define "zeo-rs.adminToken" -}}
{{- $memo := .Values.auth }}
{{- if not (hasKey $memo "__token") }}
{{- $token := .Values.auth.token }}
{{- if not $token }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "zeo-rs.secretName" .) }}
{{- if and $existing $existing.data (hasKey $existing.data .Values.auth.secretKey) }}
{{- $token = index $existing.data .Values.auth.secretKey | b64dec }}
{{- else }}
{{- $token = randAlphaNum 32 }}
{{- end }}
{{- end }}
{{- $_ := set $memo "__token" $token }}
{{- end }}
{{- index $memo "__token" }}
{{- end }}
