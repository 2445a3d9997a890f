{{/* Names ------------------------------------------------------------------------------ */}}

{{- define "bioinstruct.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "bioinstruct.fullname" -}}
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

{{/* The engine Deployment and Service of split mode. */}}
{{- define "bioinstruct.engineName" -}}
{{- printf "%s-engine" (include "bioinstruct.fullname" . | trunc 56 | trimSuffix "-") }}
{{- end }}

{{- define "bioinstruct.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "bioinstruct.selectorLabels" -}}
app.kubernetes.io/name: {{ include "bioinstruct.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "bioinstruct.labels" -}}
helm.sh/chart: {{ include "bioinstruct.chart" . }}
{{ include "bioinstruct.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: bioinstruct
{{- end }}

{{/* Gateway pods (single mode: gateway + engine). */}}
{{- define "bioinstruct.gatewaySelectorLabels" -}}
{{ include "bioinstruct.selectorLabels" . }}
app.kubernetes.io/component: gateway
{{- end }}

{{- define "bioinstruct.engineSelectorLabels" -}}
{{ include "bioinstruct.selectorLabels" . }}
app.kubernetes.io/component: engine
{{- end }}

{{- define "bioinstruct.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "bioinstruct.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "bioinstruct.image" -}}
{{- $tag := default (printf "%s-%s" .Chart.AppVersion .Values.device) .Values.image.tag }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}

{{- define "bioinstruct.authSecretName" -}}
{{- default (printf "%s-auth" (include "bioinstruct.fullname" .)) .Values.auth.existingSecret }}
{{- end }}

{{- define "bioinstruct.registryClaimName" -}}
{{- default (printf "%s-registry" (include "bioinstruct.fullname" .)) .Values.registry.pvc.existingClaim }}
{{- end }}

{{- define "bioinstruct.home" -}}/var/lib/bioinstruct{{- end }}

{{/* BIOINSTRUCT_BASE_MODEL: the model folder inside the model volume. */}}
{{- define "bioinstruct.baseModel" -}}
{{- if eq .Values.model.source "pvc" }}
{{- trimSuffix "/" (printf "%s/%s" .Values.model.mountPath (trimPrefix "/" .Values.model.pvc.path)) }}
{{- else }}
{{- printf "%s/SmolLM2-135M-Instruct" .Values.model.mountPath }}
{{- end }}
{{- end }}

{{/* Cross-field checks the JSON schema cannot express; rendered by every workload. */}}
{{- define "bioinstruct.validate" -}}
{{- $v := .Values }}
{{- if eq $v.mode "split" }}
  {{- if $v.autoscaling.enabled }}
    {{- fail "mode=split pairs one gateway with one engine: set autoscaling.enabled=false (scale with mode=single)" }}
  {{- end }}
  {{- if ne (int $v.replicaCount) 1 }}
    {{- fail "mode=split pairs one gateway with one engine: replicaCount must be 1 (scale with mode=single)" }}
  {{- end }}
  {{- if not $v.networkPolicy.enabled }}
    {{- fail "mode=split exposes vLLM's adapter load/unload API on a Service: networkPolicy.enabled must be true" }}
  {{- end }}
  {{- if eq $v.registry.type "objectStore" }}
    {{- fail "mode=split needs registry.type=pvc: vLLM in the engine pod reads adapters from the registry path the gateway hands it" }}
  {{- end }}
{{- end }}
{{- if and (eq $v.model.source "pvc") (not $v.model.pvc.claimName) }}
  {{- fail "model.source=pvc needs model.pvc.claimName (a claim holding the Hugging Face model folder)" }}
{{- end }}
{{- if and (eq $v.registry.type "objectStore") (not $v.registry.objectStore.url) }}
  {{- fail "registry.type=objectStore needs registry.objectStore.url (e.g. s3://bucket/prefix)" }}
{{- end }}
{{- if and (eq $v.registry.type "objectStore") (not $v.registry.objectStore.existingSecret) }}
  {{- fail "registry.type=objectStore needs registry.objectStore.existingSecret (credentials as environment variables)" }}
{{- end }}
{{- if and (eq $v.registry.type "pvc") (not $v.registry.pvc.existingClaim) (not $v.registry.pvc.create) }}
  {{- fail "registry.type=pvc needs registry.pvc.existingClaim or registry.pvc.create=true" }}
{{- end }}
{{- $needed := add (int $v.preStopSleepSeconds) 30 (int $v.engine.stopGraceS) }}
{{- if lt (int $v.terminationGracePeriodSeconds) (int $needed) }}
  {{- fail (printf "terminationGracePeriodSeconds=%d is too short: preStopSleepSeconds + 30 s of draining + engine.stopGraceS = %d" (int $v.terminationGracePeriodSeconds) (int $needed)) }}
{{- end }}
{{- $ip := $v.inferencePool }}
{{- if and $ip.enabled $v.networkPolicy.enabled $v.networkPolicy.ingressFrom (or (not $ip.networkPolicy.pickerFrom) (not $ip.networkPolicy.proxyFrom)) }}
  {{- fail "inferencePool.enabled with networkPolicy.ingressFrom set: also set inferencePool.networkPolicy.pickerFrom and proxyFrom, or the Endpoint Picker cannot scrape /metrics and the Gateway's proxy cannot reach the pods" }}
{{- end }}
{{- range $alias, $rec := $ip.modelRewrites }}
  {{- if and $rec.weights (not (include "bioinstruct.anyPositive" $rec.weights)) }}
    {{- fail (printf "inferencePool.modelRewrites.%s: every weight is 0; give at least one version a positive weight" $alias) }}
  {{- end }}
{{- end }}
{{- $window := mul (int $v.probes.startup.periodSeconds) (int $v.probes.startup.failureThreshold) }}
{{- if and (eq $v.mode "single") (lt (int $window) (int $v.engine.startupTimeoutS)) }}
  {{- fail (printf "the startup probe gives up after %d s, before the engine's own start-up timeout (engine.startupTimeoutS=%d): raise probes.startup.failureThreshold" (int $window) (int $v.engine.startupTimeoutS)) }}
{{- end }}
{{- end }}

{{/* Environment shared by every container that runs our code or vLLM. */}}
{{- define "bioinstruct.commonEnv" -}}
- name: HOME
  value: {{ include "bioinstruct.home" . }}
- name: XDG_CACHE_HOME
  value: {{ include "bioinstruct.home" . }}/.cache
- name: BIOINSTRUCT_HOME
  value: {{ include "bioinstruct.home" . }}
- name: BIOINSTRUCT_MODEL_CACHE
  value: {{ .Values.model.mountPath | quote }}
- name: BIOINSTRUCT_BASE_MODEL
  value: {{ include "bioinstruct.baseModel" . | quote }}
- name: HF_HUB_OFFLINE
  value: "1"
- name: TRANSFORMERS_OFFLINE
  value: "1"
- name: VLLM_NO_USAGE_STATS
  value: "1"
- name: DO_NOT_TRACK
  value: "1"
{{- end }}

{{/* Registry location and, for an object store, its credentials. */}}
{{- define "bioinstruct.registryEnv" -}}
{{- if eq .Values.registry.type "pvc" }}
- name: BIOINSTRUCT_REGISTRY
  value: {{ .Values.registry.mountPath | quote }}
{{- else }}
- name: BIOINSTRUCT_REGISTRY
  value: {{ .Values.registry.objectStore.url | quote }}
{{- with .Values.registry.objectStore.endpointUrl }}
- name: AWS_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.registry.objectStore.region }}
- name: AWS_DEFAULT_REGION
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* Engine settings read by the gateway (single mode) from BIOINSTRUCT_ENGINE_*. */}}
{{- define "bioinstruct.engineEnv" -}}
- name: BIOINSTRUCT_ENGINE_DEVICE
  value: {{ ternary "cuda" "cpu" (eq .Values.device "gpu") | quote }}
{{- with .Values.engine.dtype }}
- name: BIOINSTRUCT_ENGINE_DTYPE
  value: {{ . | quote }}
{{- end }}
- name: BIOINSTRUCT_ENGINE_MAX_MODEL_LEN
  value: {{ .Values.engine.maxModelLen | quote }}
- name: BIOINSTRUCT_ENGINE_MAX_LORAS
  value: {{ .Values.engine.maxLoras | quote }}
- name: BIOINSTRUCT_ENGINE_MAX_CPU_LORAS
  value: {{ .Values.engine.maxCpuLoras | quote }}
- name: BIOINSTRUCT_ENGINE_MAX_LORA_RANK
  value: {{ .Values.engine.maxLoraRank | quote }}
- name: BIOINSTRUCT_ENGINE_LORA_TARGET_MODULES
  value: {{ include "bioinstruct.loraLayers" . | quote }}
{{- with .Values.engine.gpuMemoryUtilization }}
- name: BIOINSTRUCT_ENGINE_GPU_MEMORY_UTILIZATION
  value: {{ . | quote }}
{{- end }}
- name: BIOINSTRUCT_ENGINE_STARTUP_TIMEOUT_S
  value: {{ .Values.engine.startupTimeoutS | quote }}
- name: BIOINSTRUCT_ENGINE_STOP_GRACE_S
  value: {{ .Values.engine.stopGraceS | quote }}
- name: BIOINSTRUCT_ENGINE_LOG_DIR
  value: {{ include "bioinstruct.home" . }}/logs
{{- if eq .Values.device "cpu" }}
- name: BIOINSTRUCT_ENGINE_KV_CACHE_GIB
  value: {{ .Values.engine.kvCacheGiB | quote }}
- name: BIOINSTRUCT_ENGINE_CPU_THREADS_BIND
  value: {{ .Values.engine.cpuThreadsBind | quote }}
{{- end }}
{{- $extra := include "bioinstruct.engineExtraArgs" . | fromJsonArray }}
{{- if $extra }}
- name: BIOINSTRUCT_ENGINE_EXTRA_ARGS
  value: {{ toJson $extra | quote }}
{{- end }}
{{- end }}

{{/* vLLM's extra arguments (JSON list): engine.extraArgs, plus its own OTLP tracing when on. */}}
{{- define "bioinstruct.engineExtraArgs" -}}
{{- $args := concat (list) .Values.engine.extraArgs }}
{{- $t := .Values.observability.tracing }}
{{- if and $t.enabled $t.engine }}
{{- $args = concat $args (list "--otlp-traces-endpoint" $t.endpoint) }}
{{- end }}
{{- toJson $args }}
{{- end }}

{{/* Logs and traces of the gateway: BIOINSTRUCT_LOG_FORMAT, BIOINSTRUCT_OTEL_ENABLED and the
     OpenTelemetry SDK's standard variables (vLLM reads the same ones in single mode). */}}
{{- define "bioinstruct.observabilityEnv" -}}
- name: BIOINSTRUCT_LOG_FORMAT
  value: {{ .Values.observability.logFormat | quote }}
{{- if .Values.observability.tracing.enabled }}
- name: BIOINSTRUCT_OTEL_ENABLED
  value: "true"
{{ include "bioinstruct.otelEnv" (dict "root" . "service" (include "bioinstruct.fullname" .)) }}
{{- end }}
{{- end }}

{{/* OTEL_* variables; call with (dict "root" $ "service" NAME). */}}
{{- define "bioinstruct.otelEnv" -}}
{{- $t := .root.Values.observability.tracing -}}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ $t.endpoint | quote }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: {{ $t.protocol | quote }}
- name: OTEL_EXPORTER_OTLP_TRACES_PROTOCOL
  value: {{ $t.protocol | quote }}
- name: OTEL_SERVICE_NAME
  value: {{ .service | quote }}
- name: OTEL_TRACES_SAMPLER
  value: parentbased_traceidratio
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ $t.sampleRatio | quote }}
{{- end }}

{{/* InferencePool mode ----------------------------------------------------------------- */}}

{{- define "bioinstruct.poolName" -}}
{{- default (include "bioinstruct.fullname" .) .Values.inferencePool.name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "bioinstruct.pickerServiceName" -}}
{{- default (printf "%s-epp" (include "bioinstruct.poolName" . | trunc 59 | trimSuffix "-")) .Values.inferencePool.endpointPicker.serviceName }}
{{- end }}

{{/* The engine-type labels the picker reads on each pod (one per key in engineTypeLabels). */}}
{{- define "bioinstruct.engineTypeLabels" -}}
{{- if .Values.inferencePool.enabled }}
{{- range .Values.inferencePool.engineTypeLabels }}
{{ . }}: {{ $.Values.inferencePool.engineType | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* An InferenceModelRewrite's name: "<pool>-<alias>"; an alias with characters a name cannot
     hold gets them replaced by "-" and 8 hex digits of its SHA-256 appended (as
     bioinstruct/inference_rewrite.py does). Call with (dict "pool" $pool "alias" $alias). */}}
{{- define "bioinstruct.rewriteName" -}}
{{- $slug := regexReplaceAll "[^a-z0-9]+" .alias "-" | trimAll "-" }}
{{- if ne $slug .alias }}
{{- $slug = printf "%s-%s" $slug (sha256sum .alias | trunc 8) }}
{{- end }}
{{- printf "%s-%s" .pool $slug }}
{{- end }}

{{/* PromQL label matchers of this release's series (monitoring.selector, or namespace + job). */}}
{{- define "bioinstruct.promSelector" -}}
{{- default (printf "namespace=%q, job=%q" .Release.Namespace (include "bioinstruct.fullname" .)) .Values.monitoring.selector }}
{{- end }}

{{/* Volumes every pod has: writable home, /tmp, /dev/shm, the model. */}}
{{- define "bioinstruct.baseVolumes" -}}
- name: home
  emptyDir:
    sizeLimit: {{ .Values.homeSizeLimit }}
- name: tmp
  emptyDir:
    sizeLimit: 1Gi
- name: dshm
  emptyDir:
    medium: Memory
    sizeLimit: {{ .Values.shmSizeLimit }}
{{- if eq .Values.model.source "pvc" }}
- name: model
  persistentVolumeClaim:
    claimName: {{ .Values.model.pvc.claimName }}
    readOnly: true
{{- else }}
- name: model
  emptyDir:
    sizeLimit: {{ .Values.model.fetch.sizeLimit }}
{{- end }}
{{- end }}

{{- define "bioinstruct.baseMounts" -}}
- name: home
  mountPath: {{ include "bioinstruct.home" . }}
- name: tmp
  mountPath: /tmp
- name: dshm
  mountPath: /dev/shm
- name: model
  mountPath: {{ .Values.model.mountPath }}
  readOnly: true
{{- end }}

{{/* The init container that fetches and converts the embedded model (model.source=fetch). */}}
{{- define "bioinstruct.fetchInitContainer" -}}
{{- if eq .Values.model.source "fetch" }}
- name: fetch-model
  image: {{ include "bioinstruct.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command: ["bioinstruct", "model", "fetch"]
  env:
    {{- include "bioinstruct.commonEnv" . | trim | nindent 4 }}
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  resources:
    {{- toYaml .Values.model.fetch.resources | nindent 4 }}
  volumeMounts:
    - name: home
      mountPath: {{ include "bioinstruct.home" . }}
    - name: tmp
      mountPath: /tmp
    - name: model
      mountPath: {{ .Values.model.mountPath }}
{{- end }}
{{- end }}

{{/* Pod identity and placement shared by both Deployments.
     Call with (dict "root" $ "placement" $placement), placement holding nodeSelector,
     affinity, tolerations and topologySpreadConstraints. */}}
{{- define "bioinstruct.podCommon" -}}
{{- $root := .root }}
{{- $p := .placement }}
serviceAccountName: {{ include "bioinstruct.serviceAccountName" $root }}
automountServiceAccountToken: false
enableServiceLinks: false
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml $root.Values.podSecurityContext | nindent 2 }}
terminationGracePeriodSeconds: {{ $root.Values.terminationGracePeriodSeconds }}
{{- with $root.Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with $p.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $p.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $p.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $p.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* "true" when some value of the map is above 0, else empty. */}}
{{- define "bioinstruct.anyPositive" -}}
{{- range $_, $w := . }}{{ if gt (int $w) 0 }}true{{ end }}{{ end }}
{{- end }}

{{/* The layers that get LoRA, as JSON: engine.loraTargetModules, or by device when it is null
     (attention only on cpu, every layer on gpu: EngineLimits.lora_layers says the same). */}}
{{- define "bioinstruct.loraLayers" -}}
{{- if kindIs "invalid" .Values.engine.loraTargetModules -}}
{{- ternary "[]" "[\"qkv_proj\",\"o_proj\"]" (eq .Values.device "gpu") -}}
{{- else -}}
{{- .Values.engine.loraTargetModules | toJson -}}
{{- end -}}
{{- end }}
