{{/*
The sidecar container, for your own pod spec. Pass the token-sidecar chart's
scope: "." inside this chart, (index .Subcharts "token-sidecar") from a chart
that has token-sidecar as a dependency. Each template renders one YAML list
item at column 0 (or nothing), so pipe it through nindent:

      initContainers:
        {{- include "token-sidecar.initContainer" $sidecar | nindent 8 }}
      containers:
        - name: app
          ...
        {{- include "token-sidecar.container" $sidecar | nindent 8 }}

With nativeSidecar false (the default) token-sidecar.container emits the
sidecar and token-sidecar.initContainer emits nothing; with nativeSidecar true
it is the other way round, and the init container gets restartPolicy Always.
Keep token-sidecar.initContainer first among your init containers so the
ones after it can get tokens.

No volumes are needed (the sidecar writes nothing to disk) unless it reads
keys from Secrets: the JWK Set of credentialKeys.secretName, or the shared
cache's key file (sharedCache.urlFrom). Your pod spec must then list those
volumes too; token-sidecar.volumes renders them (list items, or nothing):

      {{- with include "token-sidecar.volumes" $sidecar }}
      volumes:
        {{- . | nindent 8 }}
      {{- end }}
*/}}

{{- define "token-sidecar.container" -}}
{{- include "token-sidecar.checkScope" . -}}
{{- if not .Values.nativeSidecar -}}
{{- include "token-sidecar.containerSpec" (dict "scope" . "native" false) -}}
{{- end -}}
{{- end -}}

{{- define "token-sidecar.initContainer" -}}
{{- include "token-sidecar.checkScope" . -}}
{{- if .Values.nativeSidecar -}}
{{- include "token-sidecar.containerSpec" (dict "scope" . "native" true) -}}
{{- end -}}
{{- end -}}

{{/*
The shared cache's key file: where it is mounted, and its volume's name.
*/}}
{{- define "token-sidecar.sharedCacheKeyDir" -}}/etc/token-sidecar/shared-cache{{- end -}}
{{- define "token-sidecar.sharedCacheVolume" -}}{{ .Values.containerName }}-shared-cache-keys{{- end -}}

{{/*
token-sidecar.volumes: the pod volumes of the Secrets the sidecar reads, as
list items, or nothing. The credential keys Secret is mounted whole as a
directory (never with subPath, which Kubernetes does not update), so a
rotated key reaches the sidecar in place.
*/}}
{{- define "token-sidecar.volumes" -}}
{{- include "token-sidecar.checkScope" . -}}
{{- with .Values.credentialKeys -}}
{{- if .secretName }}
- name: {{ include "token-sidecar.credentialKeysVolume" $ }}
  secret:
    secretName: {{ .secretName | quote }}
    # The sidecar runs as 65532 whatever the pod's fsGroup: its files must be
    # readable by others. Only the sidecar container mounts it.
    defaultMode: 0444
{{- end -}}
{{- end -}}
{{- with .Values.sharedCache -}}
{{- if .urlFrom }}
- name: {{ include "token-sidecar.sharedCacheVolume" $ }}
  secret:
    secretName: {{ .keySecret.name }}
    items:
      - key: {{ .keySecret.key }}
        path: keys
    defaultMode: 0444
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
Refuses a scope that is not this chart's — the usual slip is passing your own
chart's "." — with a message that says what to pass instead.
*/}}
{{- define "token-sidecar.checkScope" -}}
{{- $v := .Values | default dict -}}
{{- if not (and (kindIs "map" $v.config) (hasKey $v "nativeSidecar") (kindIs "map" $v.image)) -}}
{{- fail "token-sidecar: the sidecar templates need the token-sidecar chart's scope: pass (index .Subcharts \"token-sidecar\"), not your chart's \".\"" -}}
{{- end -}}
{{- end -}}

{{/*
The contract's settings, in the order they are set: values key under config,
environment variable, how the value is printed.
*/}}
{{- define "token-sidecar.settings" -}}
- [listen, SIDECAR_LISTEN, string]
- [adminListen, SIDECAR_ADMIN_LISTEN, string]
- [tenantServiceURL, SIDECAR_TENANT_SERVICE_URL, string]
- [serviceName, SIDECAR_SERVICE_NAME, string]
- [tenantServiceTimeout, SIDECAR_TENANT_SERVICE_TIMEOUT, string]
- [genesysLoginURL, SIDECAR_GENESYS_LOGIN_URL, string]
- [genesysAPIURL, SIDECAR_GENESYS_API_URL, string]
- [oauthTimeout, SIDECAR_OAUTH_TIMEOUT, string]
- [oauthMaxRetries, SIDECAR_OAUTH_MAX_RETRIES, int]
- [breakerFailureThreshold, SIDECAR_BREAKER_FAILURE_THRESHOLD, int]
- [breakerFailureRate, SIDECAR_BREAKER_FAILURE_RATE, string]
- [breakerWindow, SIDECAR_BREAKER_WINDOW, string]
- [breakerOpenDuration, SIDECAR_BREAKER_OPEN_DURATION, string]
- [breakerHalfOpenProbes, SIDECAR_BREAKER_HALF_OPEN_PROBES, int]
- [defaultTenant, SIDECAR_DEFAULT_TENANT, string]
- [allowedTenants, SIDECAR_ALLOWED_TENANTS, list]
- [requireRequestHeader, SIDECAR_REQUIRE_REQUEST_HEADER, string]
- [requestTimeout, SIDECAR_REQUEST_TIMEOUT, string]
- [proxyTimeout, SIDECAR_PROXY_TIMEOUT, string]
- [minRefreshInterval, SIDECAR_MIN_REFRESH_INTERVAL, string]
- [refreshAt, SIDECAR_REFRESH_AT, string]
- [negativeTTL, SIDECAR_NEGATIVE_TTL, string]
- [cacheCapacity, SIDECAR_CACHE_CAPACITY, int]
- [maxConcurrentFetches, SIDECAR_MAX_CONCURRENT_FETCHES, int]
- [maxConnections, SIDECAR_MAX_CONNECTIONS, int]
- [adminMaxConnections, SIDECAR_ADMIN_MAX_CONNECTIONS, int]
- [idleTimeout, SIDECAR_IDLE_TIMEOUT, string]
- [proxyRetryBuffer, SIDECAR_PROXY_RETRY_BUFFER, int]
- [staticTokenTTL, SIDECAR_STATIC_TOKEN_TTL, string]
- [negativeCapacity, SIDECAR_NEGATIVE_CAPACITY, int]
- [refreshRetryInterval, SIDECAR_REFRESH_RETRY_INTERVAL, string]
- [prefetchTenants, SIDECAR_PREFETCH_TENANTS, list]
- [prefetchTimeout, SIDECAR_PREFETCH_TIMEOUT, string]
- [metricsTenantLabel, SIDECAR_METRICS_TENANT_LABEL, string]
- [shutdownTimeout, SIDECAR_SHUTDOWN_TIMEOUT, string]
- [logLevel, SIDECAR_LOG_LEVEL, string]
{{- end -}}

{{/*
The env list: only settings with a value, so the binary's defaults apply to
the rest. Numbers from values files arrive as float64 and would print as
1e+06; integers are printed through int64.
*/}}
{{- define "token-sidecar.env" -}}
{{- $cfg := .Values.config -}}
{{- range $setting := include "token-sidecar.settings" . | fromYamlArray }}
{{- $key := index $setting 0 -}}
{{- $kind := index $setting 2 -}}
{{- $v := index $cfg $key -}}
{{- if eq $kind "list" -}}
{{- $v = join "," ($v | default list) -}}
{{- end -}}
{{- if not (or (kindIs "invalid" $v) (and (kindIs "string" $v) (eq $v ""))) }}
- name: {{ index $setting 1 }}
  value: {{ if and (eq $kind "int") (not (kindIs "string" $v)) }}{{ int64 $v | toString | quote }}{{ else }}{{ toString $v | quote }}{{ end }}
{{- end -}}
{{- end -}}
{{- with $cfg.tenantServiceURLFrom }}
- name: SIDECAR_TENANT_SERVICE_URL
  valueFrom:
    {{- toYaml . | nindent 4 }}
{{- end -}}
{{- with .Values.sharedCache }}
{{- if .urlFrom }}
- name: SIDECAR_SHARED_CACHE_URL
  valueFrom:
    {{- toYaml .urlFrom | nindent 4 }}
- name: SIDECAR_SHARED_CACHE_KEY_FILE
  value: {{ printf "%s/keys" (include "token-sidecar.sharedCacheKeyDir" $) | quote }}
{{- range $key, $env := dict "timeout" "SIDECAR_SHARED_CACHE_TIMEOUT" "prefix" "SIDECAR_SHARED_CACHE_PREFIX" "lease" "SIDECAR_SHARED_CACHE_LEASE" }}
{{- with index $.Values.sharedCache $key }}
- name: {{ $env }}
  value: {{ toString . | quote }}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if $cfg.demo }}
- name: SIDECAR_DEMO
  value: "true"
{{- end -}}
{{- with .Values.credentialKeys }}
{{- if .secretName }}
- name: SIDECAR_CREDENTIAL_KEYS_FILE
  value: {{ printf "%s/%s" (trimSuffix "/" .mountPath) .key | quote }}
{{- with .pollInterval }}
- name: SIDECAR_CREDENTIAL_KEYS_POLL_INTERVAL
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- if .requireEncrypted }}
- name: SIDECAR_REQUIRE_ENCRYPTED_CREDENTIALS
  value: "true"
{{- end }}
{{- end -}}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end -}}
{{- end -}}

{{/* Refuses settings that would render a pod that cannot work. */}}
{{- define "token-sidecar.validate" -}}
{{- $cfg := .Values.config -}}
{{- if and $cfg.tenantServiceURL $cfg.tenantServiceURLFrom -}}
{{- fail "token-sidecar: set config.tenantServiceURL or config.tenantServiceURLFrom, not both" -}}
{{- end -}}
{{- if not (or $cfg.demo $cfg.tenantServiceURL $cfg.tenantServiceURLFrom) -}}
{{- fail "token-sidecar: config.tenantServiceURL (or config.tenantServiceURLFrom) is required unless config.demo is true" -}}
{{- end -}}
{{- $adminHost := regexReplaceAll ":[0-9]+$" ($cfg.adminListen | default ":9464") "" -}}
{{- if or (hasPrefix "127." $adminHost) (eq $adminHost "localhost") (eq $adminHost "[::1]") -}}
{{- fail "token-sidecar: config.adminListen must not be a loopback address: kubelet probes and Prometheus reach the admin listener on the pod IP" -}}
{{- end -}}
{{- if eq (include "token-sidecar.tokenPort" .) (include "token-sidecar.adminPort" .) -}}
{{- fail "token-sidecar: config.listen and config.adminListen must use different ports" -}}
{{- end -}}
{{- if eq .Values.portNames.token .Values.portNames.admin -}}
{{- fail "token-sidecar: portNames.token and portNames.admin must differ" -}}
{{- end -}}
{{- with .Values.credentialKeys -}}
{{- if and .requireEncrypted (not .secretName) (not $cfg.demo) -}}
{{- fail "token-sidecar: credentialKeys.requireEncrypted needs credentialKeys.secretName (the JWK Set that opens the credentials)" -}}
{{- end -}}
{{- end -}}
{{- with .Values.sharedCache -}}
{{- if and .urlFrom (not (and .keySecret .keySecret.name .keySecret.key)) -}}
{{- fail "token-sidecar: sharedCache.keySecret (name and key of the Secret holding the key file) is required with sharedCache.urlFrom" -}}
{{- end -}}
{{- if and .keySecret (not .urlFrom) -}}
{{- fail "token-sidecar: sharedCache.keySecret is set but sharedCache.urlFrom is not: set both to turn the shared cache on" -}}
{{- end -}}
{{- if and .urlFrom (not .urlFrom.secretKeyRef) -}}
{{- fail "token-sidecar: sharedCache.urlFrom must be a secretKeyRef: the URL carries the server's password" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "token-sidecar.credentialKeysVolume" -}}
{{- .Values.containerName | trunc 40 | trimSuffix "-" }}-credential-keys
{{- end -}}

{{- define "token-sidecar.probe" -}}
{{- $p := index . 0 -}}
httpGet:
  path: {{ index . 1 }}
  port: {{ index . 2 }}
initialDelaySeconds: {{ $p.initialDelaySeconds | default 0 | int64 }}
periodSeconds: {{ $p.periodSeconds | default 10 | int64 }}
timeoutSeconds: {{ $p.timeoutSeconds | default 1 | int64 }}
failureThreshold: {{ $p.failureThreshold | default 3 | int64 }}
{{- end -}}

{{/*
token-sidecar.containerSpec: the container as one list item. Arguments:
scope (the chart scope), native (true: init container with restartPolicy
Always).
*/}}
{{- define "token-sidecar.containerSpec" -}}
{{- $s := .scope -}}
{{- include "token-sidecar.validate" $s -}}
{{- $v := $s.Values -}}
{{- $env := include "token-sidecar.env" $s | trim -}}
- name: {{ $v.containerName }}
  image: {{ include "token-sidecar.image" $s | quote }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  {{- if .native }}
  restartPolicy: Always
  {{- end }}
  ports:
    - name: {{ $v.portNames.token }}
      containerPort: {{ include "token-sidecar.tokenPort" $s }}
      protocol: TCP
    - name: {{ $v.portNames.admin }}
      containerPort: {{ include "token-sidecar.adminPort" $s }}
      protocol: TCP
  {{- with $env }}
  env:
    {{- . | nindent 4 }}
  {{- end }}
  {{- with $v.extraEnvFrom }}
  envFrom:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- $credKeys := and $v.credentialKeys $v.credentialKeys.secretName }}
  {{- $sharedKeys := and $v.sharedCache $v.sharedCache.urlFrom }}
  {{- if or $credKeys $sharedKeys }}
  volumeMounts:
    {{- if $credKeys }}
    - name: {{ include "token-sidecar.credentialKeysVolume" $s }}
      mountPath: {{ $v.credentialKeys.mountPath | quote }}
      readOnly: true
    {{- end }}
    {{- if $sharedKeys }}
    - name: {{ include "token-sidecar.sharedCacheVolume" $s }}
      mountPath: {{ include "token-sidecar.sharedCacheKeyDir" $s }}
      readOnly: true
    {{- end }}
  {{- end }}
  {{- with $v.probes }}
  {{- if and .startup .startup.enabled }}
  startupProbe:
    {{- include "token-sidecar.probe" (list .startup "/readyz" $v.portNames.admin) | nindent 4 }}
  {{- end }}
  {{- if and .liveness .liveness.enabled }}
  livenessProbe:
    {{- include "token-sidecar.probe" (list .liveness "/healthz" $v.portNames.admin) | nindent 4 }}
  {{- end }}
  {{- if and .readiness .readiness.enabled }}
  readinessProbe:
    {{- include "token-sidecar.probe" (list .readiness "/readyz" $v.portNames.admin) | nindent 4 }}
  {{- end }}
  {{- end }}
  {{- if $v.preStopSleepSeconds }}
  lifecycle:
    preStop:
      sleep:
        seconds: {{ $v.preStopSleepSeconds | int64 }}
  {{- end }}
  {{- with $v.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.securityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  terminationMessagePolicy: FallbackToLogsOnError
{{- end -}}
