"""Deployment artefacts, checked offline: the Dockerfile, the Helm chart, docs/DEPLOY.md.

- hadolint lints the Dockerfile (warnings fail);
- `helm lint --strict` passes for the default values and every example values file;
- every example renders to non-empty manifests that pass `kubernetes-validate --strict`
  (custom resources such as ServiceMonitor have no bundled schema: checked by hand here);
- bad values are refused by values.schema.json, and a broken template fails lint/render;
- what the manifests promise: the engine is never exposed in single mode, containers are
  hardened, GPUs are requested where they should be, probes and graceful stop add up, the
  HPA scales on gauges the gateway really exports, every BIOINSTRUCT_* variable is a real
  setting, and every helm command in docs/DEPLOY.md renders against the chart.

helm is fetched once into .tools/ by scripts/get-helm.sh (see that script).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "bioinstruct"
EXAMPLES = sorted((CHART / "examples").glob("values-*.yaml"))
DOCKERFILE = ROOT / "Dockerfile"
DEPLOY_DOC = ROOT / "docs" / "DEPLOY.md"
BIN = Path(sys.executable).parent
# Kinds that come from CRDs: kubernetes-validate has no schema for them (it only warns).
CRD_KINDS = {"ServiceMonitor", "PrometheusRule", "InferencePool", "InferenceModelRewrite", "HTTPRoute"}
# Oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest bundled.
KUBE_OLDEST = "1.27.0"


def _tool(name: str) -> str:
    path = BIN / name
    if path.is_file():
        return str(path)
    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} not found: install the dev extras (pip install -e '.[dev]')")
    return found


# ---- helm ----------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def helm(tmp_path_factory) -> dict[str, Any]:
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "get-helm.sh")], capture_output=True, text=True,
                          timeout=300)
    if proc.returncode != 0:
        pytest.fail(f"could not get helm (scripts/get-helm.sh): {proc.stderr.strip()[-2000:]}")
    home = tmp_path_factory.mktemp("helm-home")
    env = dict(os.environ)
    for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        env[var] = str(home / var.lower())
    env.pop("KUBECONFIG", None)
    return {"bin": proc.stdout.strip().splitlines()[-1], "env": env}


def run_helm(helm: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm["bin"], *args], capture_output=True, text=True, env=helm["env"], timeout=120)


def values_args(values: list[Path | dict] | None, tmp_path: Path | None = None) -> list[str]:
    args: list[str] = []
    for i, v in enumerate(values or []):
        if isinstance(v, dict):
            assert tmp_path is not None
            path = tmp_path / f"values-{i}.yaml"
            path.write_text(json.dumps(v))  # JSON is YAML, and keeps the types exact
            v = path
        args += ["-f", str(v)]
    return args


def template(helm, values=None, tmp_path=None, chart: Path = CHART) -> subprocess.CompletedProcess[str]:
    return run_helm(helm, "template", "bio", str(chart), "--namespace", "ml", *values_args(values, tmp_path))


def render(helm, values=None, tmp_path=None, chart: Path = CHART) -> list[dict[str, Any]]:
    proc = template(helm, values, tmp_path, chart)
    assert proc.returncode == 0, proc.stderr
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert docs, "helm template rendered nothing"
    return docs


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def pod_specs(docs: list[dict]) -> list[dict]:
    return [d["spec"]["template"]["spec"] for d in by_kind(docs, "Deployment")]


def all_containers(docs: list[dict]) -> list[dict]:
    return [c for spec in pod_specs(docs) for c in spec.get("initContainers", []) + spec["containers"]]


def component(doc: dict) -> str | None:
    return doc["metadata"]["labels"].get("app.kubernetes.io/component")


CASES = [pytest.param([], id="default")] + [pytest.param([p], id=p.stem) for p in EXAMPLES]


@pytest.fixture(scope="session")
def renders(helm) -> dict[str, list[dict]]:
    """Every example rendered once (and the defaults), by id."""
    out = {"default": render(helm)}
    for p in EXAMPLES:
        out[p.stem] = render(helm, [p])
    return out


def test_examples_cover_cpu_gpu_and_replicas():
    names = {p.stem for p in EXAMPLES}
    assert {"values-cpu", "values-gpu", "values-replicas"} <= names, names


@pytest.mark.parametrize("values", CASES)
def test_helm_lint_strict(helm, values):
    proc = run_helm(helm, "lint", "--strict", str(CHART), *values_args(values))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize("values", CASES)
def test_render_passes_kubernetes_validate_strict(helm, values, tmp_path):
    from kubernetes_validate.utils import latest_version

    proc = template(helm, values)
    assert proc.returncode == 0, proc.stderr
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "ServiceAccount"} <= kinds, kinds
    manifest = tmp_path / "render.yaml"
    manifest.write_text(proc.stdout)
    kv = subprocess.run([_tool("kubernetes-validate"), "--strict", "-k", KUBE_OLDEST, "-k", latest_version(),
                         str(manifest)], capture_output=True, text=True, timeout=120)
    output = kv.stdout + kv.stderr
    assert kv.returncode == 0, output
    passed = re.findall(r"^INFO .* passed for resource", output, re.M)
    crds = [d for d in docs if d["kind"] in CRD_KINDS]
    assert len(passed) == 2 * (len(docs) - len(crds)), output  # each resource, each version
    for line in re.findall(r"^WARN .*$", output, re.M):
        assert any(f"kind {k} " in line for k in CRD_KINDS), f"unexpected warning: {line}"


def test_kubernetes_validate_catches_a_misspelled_field(helm, tmp_path):
    """The validation step is live: a field the API does not know fails it."""
    proc = template(helm)
    broken = proc.stdout.replace("revisionHistoryLimit:", "revisionHistoryLimt:", 1)
    assert broken != proc.stdout
    manifest = tmp_path / "broken.yaml"
    manifest.write_text(broken)
    kv = subprocess.run([_tool("kubernetes-validate"), "--strict", "--quiet", str(manifest)],
                        capture_output=True, text=True, timeout=120)
    assert kv.returncode != 0 and "revisionHistoryLimt" in kv.stdout + kv.stderr


def test_service_monitor_matches_the_service(renders):
    docs = renders["values-replicas"]
    (sm,) = by_kind(docs, "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    (svc,) = [s for s in by_kind(docs, "Service") if component(s) == "gateway"]
    selector = sm["spec"]["selector"]["matchLabels"]
    assert selector.items() <= svc["metadata"]["labels"].items()
    port_names = {p["name"] for p in svc["spec"]["ports"]}
    for ep in sm["spec"]["endpoints"]:
        assert ep["port"] in port_names and ep["path"] == "/metrics"
    assert sm["metadata"]["labels"]["release"] == "prometheus"


# ---- the schema refuses bad values; the chart refuses inconsistent ones --------------------

SCHEMA_REFUSALS = [
    pytest.param({"replicaCount": "three"}, "replicaCount", id="replicaCount-string"),
    pytest.param({"replicaCount": -1}, "replicaCount", id="replicaCount-negative"),
    pytest.param({"mode": "triple"}, "mode", id="unknown-mode"),
    pytest.param({"device": "tpu"}, "device", id="unknown-device"),
    pytest.param({"replicas": 3}, "replicas", id="unknown-top-level-key"),
    pytest.param({"gateway": {"port": 0}}, "port", id="port-zero"),
    pytest.param({"gateway": {"prot": 8000}}, "prot", id="misspelled-nested-key"),
    pytest.param({"engine": {"maxLoraRank": 17}}, "maxLoraRank", id="rank-vllm-refuses"),
    pytest.param({"engine": {"gpuMemoryUtilization": 1.5}}, "gpuMemoryUtilization", id="gpu-mem-over-1"),
    pytest.param({"registry": {"type": "nfs"}}, "type", id="unknown-registry-type"),
    pytest.param({"model": {"source": "pvc"}}, "claimName", id="pvc-model-without-claim"),
    pytest.param({"registry": {"type": "objectStore"}}, "url", id="object-store-without-url"),
    pytest.param({"mode": "split", "replicaCount": 2}, "replicaCount", id="split-with-two-gateways"),
    pytest.param({"mode": "split", "networkPolicy": {"enabled": False}}, "enabled", id="split-without-netpol"),
    pytest.param({"podSecurityContext": {"runAsNonRoot": False}}, "runAsNonRoot", id="root-pod"),
    pytest.param({"securityContext": {"privileged": True}}, "privileged", id="privileged-container"),
    pytest.param({"auth": {"apiKeys": {"k1": "qa"}}}, "apiKeys", id="api-keys-not-lists"),
    pytest.param({"probes": {"startup": {"periodSeconds": "10s"}}}, "periodSeconds", id="probe-period-string"),
]


@pytest.mark.parametrize(("values", "field"), SCHEMA_REFUSALS)
def test_schema_refuses_bad_values(helm, tmp_path, values, field):
    proc = template(helm, [values], tmp_path)
    assert proc.returncode != 0, f"rendered with bad values {values}"
    assert "values don't meet the specifications of the schema" in proc.stderr, proc.stderr
    assert field in proc.stderr, proc.stderr


def test_lint_strict_refuses_bad_values(helm, tmp_path):
    proc = run_helm(helm, "lint", "--strict", str(CHART), *values_args([{"replicaCount": "three"}], tmp_path))
    assert proc.returncode != 0
    assert "replicaCount" in proc.stdout + proc.stderr


@pytest.mark.parametrize(("values", "message"), [
    pytest.param({"terminationGracePeriodSeconds": 30}, "too short", id="grace-shorter-than-drain"),
    pytest.param({"probes": {"startup": {"periodSeconds": 10, "failureThreshold": 6, "timeoutSeconds": 5}}},
                 "startup probe gives up", id="startup-window-shorter-than-engine-timeout"),
    pytest.param({"registry": {"pvc": {"create": False}}}, "existingClaim", id="registry-pvc-nowhere"),
])
def test_chart_refuses_inconsistent_values(helm, tmp_path, values, message):
    proc = template(helm, [values], tmp_path)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr


@pytest.fixture
def chart_copy(tmp_path) -> Path:
    dest = tmp_path / "bioinstruct"
    shutil.copytree(CHART, dest)
    return dest


def test_broken_template_syntax_fails_lint_and_template(helm, chart_copy):
    path = chart_copy / "templates" / "deployment.yaml"
    path.write_text(path.read_text().replace("{{ include \"bioinstruct.image\" . }}",
                                              "{{ include \"bioinstruct.image\" . ", 1))
    lint = run_helm(helm, "lint", "--strict", str(chart_copy))
    assert lint.returncode != 0, lint.stdout
    assert template(helm, chart=chart_copy).returncode != 0


def test_broken_manifest_fails_validation(helm, chart_copy, tmp_path):
    """A template that renders but writes a field Kubernetes does not have is caught too."""
    path = chart_copy / "templates" / "service.yaml"
    path.write_text(path.read_text().replace("targetPort: http", "targetPort: http\n      tagetPort: http"))
    proc = template(helm, chart=chart_copy)
    assert proc.returncode == 0, proc.stderr
    manifest = tmp_path / "render.yaml"
    manifest.write_text(proc.stdout)
    kv = subprocess.run([_tool("kubernetes-validate"), "--strict", "--quiet", str(manifest)],
                        capture_output=True, text=True, timeout=120)
    assert kv.returncode != 0 and "tagetPort" in kv.stdout + kv.stderr


def test_bad_default_values_fail_lint(helm, chart_copy):
    """values.yaml itself is checked against the schema."""
    path = chart_copy / "values.yaml"
    path.write_text(path.read_text().replace("mode: single", "mode: one-pod", 1))
    lint = run_helm(helm, "lint", "--strict", str(chart_copy))
    assert lint.returncode != 0 and "mode" in lint.stdout + lint.stderr


# ---- what the manifests promise ------------------------------------------------------------

def _single_mode(renders):
    return {k: v for k, v in renders.items()
            if all("BIOINSTRUCT_ENGINE_URL" not in json.dumps(d) for d in by_kind(v, "Deployment"))}


def test_engine_never_exposed_in_single_mode(renders):
    singles = _single_mode(renders)
    assert {"default", "values-cpu", "values-gpu", "values-replicas"} <= singles.keys()
    for name, docs in singles.items():
        (deploy,) = by_kind(docs, "Deployment")
        (container,) = deploy["spec"]["template"]["spec"]["containers"]
        assert [p["name"] for p in container["ports"]] == ["http"], name
        http_port = container["ports"][0]["containerPort"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        # The engine binds 127.0.0.1 (its settings refuse anything else) on a port of its own.
        assert env.get("BIOINSTRUCT_ENGINE_HOST") in (None, "127.0.0.1"), name
        assert env.get("BIOINSTRUCT_ENGINE_PORT") in (None, "0"), name
        for svc in by_kind(docs, "Service"):
            assert component(svc) == "gateway", name
            assert [p["targetPort"] for p in svc["spec"]["ports"]] == ["http"], name
        for ing in by_kind(docs, "Ingress"):
            for rule in ing["spec"]["rules"]:
                for path in rule["http"]["paths"]:
                    assert path["backend"]["service"]["port"] == {"name": "http"}, name
        assert http_port == 8000


def test_split_mode_engine_reachable_from_gateway_only(renders):
    docs = renders["values-split"]
    deploys = {component(d): d for d in by_kind(docs, "Deployment")}
    assert set(deploys) == {"gateway", "engine"}
    engine_svc = [s for s in by_kind(docs, "Service") if component(s) == "engine"]
    (engine_svc,) = engine_svc
    assert engine_svc["spec"]["type"] == "ClusterIP"
    engine_pod_labels = deploys["engine"]["spec"]["template"]["metadata"]["labels"]
    gateway_pod_labels = deploys["gateway"]["spec"]["template"]["metadata"]["labels"]
    policies = [p for p in by_kind(docs, "NetworkPolicy")
                if p["spec"]["podSelector"]["matchLabels"].items() <= engine_pod_labels.items()]
    (policy,) = policies
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    (peer,) = rule["from"]
    assert set(peer) == {"podSelector"}
    assert peer["podSelector"]["matchLabels"].items() <= gateway_pod_labels.items()
    assert not peer["podSelector"]["matchLabels"].items() <= engine_pod_labels.items()
    # The gateway attaches to that Service; vLLM opens adapters at the gateway's registry path.
    gw = deploys["gateway"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in gw["env"]}
    assert env["BIOINSTRUCT_ENGINE_URL"] == f"http://{engine_svc['metadata']['name']}:8100"
    mounts = {c["name"]: {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
              for d in deploys.values() for c in d["spec"]["template"]["spec"]["containers"]}
    assert mounts["gateway"]["registry"] == mounts["engine"]["registry"] == env["BIOINSTRUCT_REGISTRY"]
    engine = deploys["engine"]["spec"]["template"]["spec"]["containers"][0]
    assert "--enable-lora" in engine["args"]
    assert {"name": "VLLM_ALLOW_RUNTIME_LORA_UPDATING", "value": "True"} in engine["env"]


def test_security_context_hardened(renders):
    for name, docs in renders.items():
        for spec in pod_specs(docs):
            assert spec["securityContext"]["runAsNonRoot"] is True, name
            assert spec["securityContext"]["runAsUser"] != 0, name
            assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
            assert spec["automountServiceAccountToken"] is False, name
            assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC"), name
            assert all("hostPath" not in v for v in spec["volumes"]), name
        containers = all_containers(docs)
        assert containers, name
        for c in containers:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, (name, c["name"])
            assert sc["allowPrivilegeEscalation"] is False, (name, c["name"])
            assert sc["capabilities"]["drop"] == ["ALL"], (name, c["name"])
            assert not sc.get("capabilities", {}).get("add"), (name, c["name"])
            assert sc.get("privileged") is not True, (name, c["name"])


def _gpus(container: dict) -> int | None:
    return container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu")


def test_gpu_requested_where_the_engine_runs(renders):
    (gpu,) = by_kind(renders["values-gpu"], "Deployment")
    (container,) = gpu["spec"]["template"]["spec"]["containers"]
    assert _gpus(container) == 1
    assert {"name": "BIOINSTRUCT_ENGINE_DEVICE", "value": "cuda"} in container["env"]
    assert gpu["spec"]["template"]["spec"]["tolerations"][0]["key"] == "nvidia.com/gpu"
    for c in all_containers(renders["values-cpu"]):
        assert _gpus(c) is None, c["name"]
    (cpu,) = by_kind(renders["values-cpu"], "Deployment")
    assert cpu["spec"]["template"]["spec"]["containers"][0]["image"].endswith("-cpu")
    split = {component(d): d for d in by_kind(renders["values-split"], "Deployment")}
    assert _gpus(split["engine"]["spec"]["template"]["spec"]["containers"][0]) == 1
    assert _gpus(split["gateway"]["spec"]["template"]["spec"]["containers"][0]) is None


def test_lora_layers_by_device_unless_set(renders, helm, tmp_path):
    """engine.loraTargetModules null (the default): every layer on gpu, attention only on cpu, in
    the gateway's settings and in a split engine's flags alike; a value given wins."""
    def lora_env(docs):
        return {e["value"] for c in all_containers(docs) for e in c.get("env", [])
                if e["name"] == "BIOINSTRUCT_ENGINE_LORA_TARGET_MODULES"}

    assert lora_env(renders["values-gpu"]) == {"[]"}
    assert lora_env(renders["values-cpu"]) == {'["qkv_proj","o_proj"]'}
    split = {component(d): d for d in by_kind(renders["values-split"], "Deployment")}
    assert "--lora-target-modules" not in split["engine"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert lora_env(renders["values-split"]) == {"[]"}
    given = tmp_path / "given.yaml"
    given.write_text("engine:\n  loraTargetModules: [qkv_proj]\n")
    docs = render(helm, [CHART / "examples" / "values-split.yaml", given])
    engine = {component(d): d for d in by_kind(docs, "Deployment")}["engine"]
    args = engine["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--lora-target-modules") + 1] == "qkv_proj" and lora_env(docs) == {'["qkv_proj"]'}


def test_probes_and_graceful_stop(renders, helm):
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for name, docs in renders.items():
        for deploy in by_kind(docs, "Deployment"):
            spec = deploy["spec"]["template"]["spec"]
            c = spec["containers"][0]
            if component(deploy) == "gateway":
                assert c["startupProbe"]["httpGet"]["path"] == "/health/ready", name
                assert c["livenessProbe"]["httpGet"]["path"] == "/health/live", name
                assert c["readinessProbe"]["httpGet"]["path"] == "/health/ready", name
                env = {e["name"]: e.get("value") for e in c["env"]}
                startup = c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"]
                engine_timeout = float(env.get("BIOINSTRUCT_ENGINE_STARTUP_TIMEOUT_S",
                                               values["engine"]["startupTimeoutS"]))
                assert startup >= engine_timeout, name
            sleep = int(c["lifecycle"]["preStop"]["exec"]["command"][1])
            assert sleep > 0, name
            # preStop sleep + uvicorn's 30 s drain + the engine's stop grace fit in the grace period.
            assert spec["terminationGracePeriodSeconds"] >= sleep + 30 + values["engine"]["stopGraceS"], name


def test_hpa_scales_on_gauges_the_gateway_exports(renders):
    from bioinstruct.service.metrics import Metrics

    exported = {m.name for m in Metrics().registry.collect()}
    docs = renders["values-replicas"]
    (hpa,) = by_kind(docs, "HorizontalPodAutoscaler")
    names = {m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"]}
    assert names == {"bioinstruct_inflight_requests", "bioinstruct_queued_requests"}
    assert names <= exported, exported
    (deploy,) = by_kind(docs, "Deployment")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deploy["metadata"]["name"]
    assert "replicas" not in deploy["spec"]  # the HPA owns the count
    (pdb,) = by_kind(docs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= \
        deploy["spec"]["template"]["metadata"]["labels"].items()


def test_secrets_come_from_secrets(renders, helm, tmp_path):
    (secret,) = by_kind(renders["default"], "Secret")
    assert set(secret["data"]) == {"admin-token"}
    assert not by_kind(renders["values-gpu"], "Secret")  # auth.existingSecret
    docs = render(helm, [{"auth": {"apiKeys": {"k-123": ["qa", "ie"]}, "adminToken": "s3cret-token"}}], tmp_path)
    text = yaml.safe_dump_all(by_kind(docs, "Deployment"))
    assert "k-123" not in text and "s3cret-token" not in text
    (secret,) = by_kind(docs, "Secret")
    import base64

    assert json.loads(base64.b64decode(secret["data"]["api-keys"])) == {"k-123": ["qa", "ie"]}
    for name, docs in renders.items():
        for c in all_containers(docs):
            for e in c.get("env", []):
                if e["name"] in ("BIOINSTRUCT_API_KEYS", "BIOINSTRUCT_ADMIN_TOKEN"):
                    assert "secretKeyRef" in e["valueFrom"], (name, e)


def test_no_weights_or_registry_in_the_image_and_registry_shared(renders):
    """Model and registry come from volumes (or the object store), one registry for all replicas."""
    for name, docs in renders.items():
        for spec in pod_specs(docs):
            volumes = {v["name"]: v for v in spec["volumes"]}
            assert "model" in volumes, name
            if "registry" in volumes:
                claim = volumes["registry"]["persistentVolumeClaim"]["claimName"]
                assert claim.endswith("-registry"), name
    pvcs = by_kind(renders["values-replicas"], "PersistentVolumeClaim")
    assert [p["spec"]["accessModes"] for p in pvcs] == [["ReadWriteMany"]]
    (deploy,) = by_kind(renders["values-objectstore"], "Deployment")
    c = deploy["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["BIOINSTRUCT_REGISTRY"].startswith("s3://")
    assert c["envFrom"] == [{"secretRef": {"name": "bioinstruct-s3"}}]


def _setting_names() -> set[str]:
    from bioinstruct.service.engine import EngineSettings
    from bioinstruct.service.observability import ObservabilitySettings
    from bioinstruct.service.settings import ServiceSettings
    from bioinstruct.settings import CoreSettings

    names = {f"BIOINSTRUCT_{f.upper()}" for f in CoreSettings.model_fields}
    names |= {f"BIOINSTRUCT_{f.upper()}" for f in ServiceSettings.model_fields}
    names |= {f"BIOINSTRUCT_{f.upper()}" for f in ObservabilitySettings.model_fields}
    names |= {f"BIOINSTRUCT_ENGINE_{f.upper()}" for f in EngineSettings.model_fields}
    return names


def test_every_bioinstruct_variable_is_a_real_setting(renders):
    known = _setting_names()
    for name, docs in renders.items():
        for c in all_containers(docs):
            for e in c.get("env", []):
                if e["name"].startswith("BIOINSTRUCT_"):
                    assert e["name"] in known, (name, c["name"], e["name"])
    dockerfile_vars = set(re.findall(r"\b(BIOINSTRUCT_[A-Z_]+)=", DOCKERFILE.read_text()))
    assert dockerfile_vars and dockerfile_vars <= known, dockerfile_vars - known


# ---- the Dockerfile --------------------------------------------------------------------------

def test_hadolint_passes():
    proc = subprocess.run([_tool("hadolint"), "--failure-threshold", "warning", str(DOCKERFILE)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\nRUN cd /app && make\n")
    proc = subprocess.run([_tool("hadolint"), "--failure-threshold", "warning", str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0


def _stages(text: str) -> dict[str, list[str]]:
    text = re.sub(r"\\\n", " ", text)
    stages: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"FROM\s+\S+\s+AS\s+(\S+)", line, re.I)
        if m:
            current = m.group(1)
            stages[current] = []
        elif current:
            stages[current].append(line)
    return stages


def test_dockerfile_targets_user_healthcheck():
    stages = _stages(DOCKERFILE.read_text())
    assert {"cpu", "gpu", "runtime"} <= stages.keys()
    assert list(stages)[-1] == "gpu"  # the default target
    assert any('"/src[cpu,otel]"' in line for line in stages["build-cpu"])  # otel: tracing works in the image
    assert any('"/src[gpu,otel]"' in line for line in stages["build-gpu"])
    assert any("uninstall" in line and "torchvision" in line for line in stages["build-cpu"])
    assert any("-c /src/requirements/cpu.txt" in line for line in stages["build-cpu"])  # the tested pins
    for target in ("cpu", "gpu"):
        lines = stages[target]
        assert lines[-1] == "USER 10001:10001", target  # nothing runs as root after this
        copies = [line for line in lines if line.startswith("COPY")]
        assert copies == [f"COPY --from=build-{target} /opt/venv /opt/venv"], copies
    runtime = stages["runtime"]
    assert any(line.startswith("HEALTHCHECK") and "/health/ready" in line for line in runtime)
    assert not any(line.startswith("COPY") for line in runtime)
    assert not any(re.search(r"(TOKEN|KEY|PASSWORD|SECRET)\w*=", line) for s in stages.values() for line in s
                   if line.startswith(("ENV", "ARG")))


def test_dockerignore_keeps_weights_data_and_secrets_out():
    patterns = set((ROOT / ".dockerignore").read_text().split())
    for pattern in (".git", ".venv", ".cache", ".tools", "registry", "runs", "data", "**/*.safetensors",
                    "**/*.gguf", ".env", "tests"):
        assert pattern in patterns, pattern
    # The build needs these: never ignore them.
    for needed in ("pyproject.toml", "README.md", "service", "bioinstruct"):
        assert needed not in patterns


# ---- docs/DEPLOY.md ---------------------------------------------------------------------------

def _shell_commands(markdown: str) -> list[str]:
    """Command lines of the bash/sh code blocks, continuation lines joined."""
    commands: list[str] = []
    block: list[str] | None = None
    shell = False
    for line in markdown.splitlines():
        fence = re.match(r"^\s*```\s*(\S*)", line)
        if fence and block is None:
            block, shell = [], fence.group(1) in ("bash", "sh", "shell", "console")
        elif fence:
            if shell:
                for cmd in re.sub(r"\\\n\s*", " ", "\n".join(block)).splitlines():
                    cmd = cmd.strip()
                    if cmd and not cmd.startswith("#"):
                        commands.append(cmd)
            block = None
        elif block is not None:
            block.append(line)
    assert block is None, "unclosed code block in DEPLOY.md"
    return commands


def _helm_value_flags(cmd: str) -> list[str] | None:
    """The values flags of a `helm install/upgrade/template` of our chart, or None."""
    words = shlex.split(cmd.split(" | ")[0], comments=True)
    if len(words) < 2 or Path(words[0]).name != "helm" or words[1] not in ("install", "upgrade", "template"):
        return None
    assert "helm/bioinstruct" in words, f"DEPLOY.md: {cmd!r} does not install helm/bioinstruct"
    flags: list[str] = []
    i = 2
    while i < len(words):
        w = words[i]
        if w in ("-f", "--values", "--set", "--set-string", "--set-json"):
            value = words[i + 1]
            if w in ("-f", "--values"):
                path = ROOT / value
                assert path.is_file(), f"DEPLOY.md names a values file that does not exist: {value}"
                value = str(path)
            flags += [w, value]
            i += 2
            continue
        i += 1
    return flags


def test_deploy_doc_helm_commands_render(helm):
    text = DEPLOY_DOC.read_text()
    commands = [c for c in _shell_commands(text) if _helm_value_flags(c) is not None]
    assert len(commands) >= 4, "DEPLOY.md should show install, upgrade and scale commands"
    for cmd in commands:
        flags = _helm_value_flags(cmd)
        proc = run_helm(helm, "template", "bio", str(CHART), *flags)
        assert proc.returncode == 0, f"DEPLOY.md command does not render: {cmd}\n{proc.stderr}"


def _value_paths(tree: Any, prefix: str = "") -> set[str]:
    paths = set()
    if isinstance(tree, dict):
        for k, v in tree.items():
            p = f"{prefix}.{k}" if prefix else str(k)
            paths.add(p)
            paths |= _value_paths(v, p)
    return paths


def test_deploy_doc_names_real_values_metrics_and_routes():
    text = DEPLOY_DOC.read_text()
    values = _value_paths(yaml.safe_load((CHART / "values.yaml").read_text()))
    named = set(re.findall(r"`((?:gateway|engine|model|registry|auth|probes|autoscaling|serviceMonitor|"
                           r"networkPolicy|ingress|podDisruptionBudget|image|service)\.[A-Za-z0-9_.]+)`", text))
    assert named, "DEPLOY.md should name chart values"
    unknown = {n for n in named if n not in values}
    assert not unknown, f"DEPLOY.md names values the chart does not have: {sorted(unknown)}"
    # The values reference table: every value in its first column exists.
    section = text.split("## Values reference", 1)[1].split("\n## ", 1)[0]
    table_values = {re.sub(r"\.\*$", "", v) for row in re.findall(r"^\| *([^|]+)\|", section, re.M)
                    for v in re.findall(r"`([^`]+)`", row)}
    assert len(table_values) > 20, table_values
    unknown = {v for v in table_values if v not in values}
    assert not unknown, f"DEPLOY.md's values table names values the chart does not have: {sorted(unknown)}"
    from bioinstruct.service.metrics import Metrics

    exported = {m.name for m in Metrics().registry.collect()}
    for metric in set(re.findall(r"\b(bioinstruct_[a-z_]+)\b", text)):
        base = re.sub(r"_(total|bucket|sum|count)$", "", metric)
        assert base in exported, f"DEPLOY.md names metric {metric}, which the gateway does not export"
    for route in ("/health/live", "/health/ready", "/metrics", "/admin/aliases/"):
        assert route in text, route


def test_every_metric_the_gateway_exports_is_in_deploys_table():
    """docs/DEPLOY.md's "Metrics" table lists every family the gateway registers (one added to
    service/metrics.py without a row fails here)."""
    from bioinstruct.service.metrics import Metrics

    section = DEPLOY_DOC.read_text().split("## Metrics", 1)[1].split("\n## ", 1)[0]
    names = {m.name for m in Metrics().registry.collect() if m.name.startswith("bioinstruct_")}
    assert len(names) >= 15
    missing = sorted(n for n in names if f"`{n}" not in section)
    assert not missing, f"docs/DEPLOY.md's Metrics table lacks {missing}"
