"""deploy/k8s/: every overlay renders with ``kubectl kustomize``, and what it renders
agrees with the server: API versions, probes on routes the app has, settings and flags
``hotswap serve`` accepts, ports and names that match from Deployment to Service,
ServiceMonitor and InferencePool, no literal secret, a hardened pod."""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml
from hotswap.server.config import Settings
from support.app import make_app
from support.k8s import (
    DEPLOY,
    DOCKERFILES,
    OVERLAYS,
    Obj,
    config_env,
    container,
    dockerfile_env,
    epp_metric_names,
    of_kind,
    one,
    render,
    render_text,
    tool,
)

API_VERSIONS = {
    "ConfigMap": "v1", "Service": "v1", "ServiceAccount": "v1",
    "PersistentVolumeClaim": "v1", "Deployment": "apps/v1",
    "PodDisruptionBudget": "policy/v1", "NetworkPolicy": "networking.k8s.io/v1",
    "Role": "rbac.authorization.k8s.io/v1", "RoleBinding": "rbac.authorization.k8s.io/v1",
    "ServiceMonitor": "monitoring.coreos.com/v1", "PrometheusRule": "monitoring.coreos.com/v1",
    "InferencePool": "inference.networking.k8s.io/v1",
    "InferenceObjective": "inference.networking.x-k8s.io/v1alpha2",
    "HTTPRoute": "gateway.networking.k8s.io/v1",
}
BASE_KINDS = {"ConfigMap", "Deployment", "Service", "ServiceAccount", "PersistentVolumeClaim",
              "PodDisruptionBudget", "NetworkPolicy", "ServiceMonitor", "PrometheusRule"}
ROUTING_KINDS = {"InferencePool", "InferenceObjective", "HTTPRoute", "Role", "RoleBinding"}
SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "CREDENTIAL")


def _server(objs: list[Obj]) -> Obj:
    return container(one(objs, "Deployment", "hotswap"), "hotswap")


def _ports(c: Obj) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in c["ports"]}


def _flags(args: list[str]) -> dict[str, str]:
    pairs = {}
    for arg in args:
        assert arg.startswith("--") and "=" in arg, f"write flags as --name=value: {arg}"
        flag, value = arg[2:].split("=", 1)
        pairs[flag] = value
    return pairs


@pytest.fixture(scope="module")
def serve_flags() -> set[str]:
    done = subprocess.run([tool("hotswap"), "serve", "--help"], capture_output=True,
                          text=True, timeout=60, env={"COLUMNS": "400", "PATH": "/usr/bin"})
    assert done.returncode == 0, done.stderr
    return {word.strip(",").split("/")[0][2:] for word in done.stdout.split()
            if word.startswith("--")}


@pytest.fixture(scope="module")
def app_paths(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    app = make_app(tmp_path_factory.mktemp("app"))
    return {route.path for route in app.routes}  # type: ignore[attr-defined]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kinds_and_api_versions(overlay: str) -> None:
    objs = render(overlay)
    kinds = {o["kind"] for o in objs}
    expected = BASE_KINDS | (ROUTING_KINDS if overlay == "multi-replica" else set())
    assert kinds == expected
    for o in objs:
        assert o["apiVersion"] == API_VERSIONS[o["kind"]], o["kind"]
        assert o["metadata"].get("namespace") == "hotswap", (o["kind"], o["metadata"]["name"])
    assert not of_kind(objs, "Secret")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_hit_routes_the_server_has(overlay: str, app_paths: set[str]) -> None:
    c = _server(render(overlay))
    probes = {kind: c[kind] for kind in ("startupProbe", "readinessProbe", "livenessProbe")}
    for kind, probe in probes.items():
        assert probe["httpGet"]["path"] in app_paths, kind
        assert probe["httpGet"]["port"] in _ports(c), kind
    assert probes["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert probes["livenessProbe"]["httpGet"]["path"] == "/health"
    # /health answers while the model loads: start-up must wait for /ready, and for
    # long enough to load a model.
    assert probes["startupProbe"]["httpGet"]["path"] == "/ready"
    startup = probes["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_args_and_config_are_settings_hotswap_accepts(
        overlay: str, serve_flags: set[str], monkeypatch: pytest.MonkeyPatch) -> None:
    objs = render(overlay)
    deployment = one(objs, "Deployment", "hotswap")
    c = _server(objs)
    flags = _flags(c["args"])
    assert set(flags) <= serve_flags
    env = {**dockerfile_env(DEPLOY / "docker" / f"Dockerfile.{_image_kind(c)}"),
           **config_env(objs, deployment, "hotswap")}
    fields = {f"HOTSWAP_{name.upper()}" for name in Settings.model_fields}
    hotswap_env = {k: v for k, v in env.items() if k.startswith("HOTSWAP_")}
    assert set(hotswap_env) <= fields, "a HOTSWAP_* variable no setting reads is ignored"
    # The whole configuration validates, as `hotswap serve` would at start.
    for name in fields:
        monkeypatch.delenv(name, raising=False)
    for name, value in hotswap_env.items():
        monkeypatch.setenv(name, value)
    settings = Settings(**{f.replace("-", "_"): v for f, v in flags.items()})
    ports = _ports(c)
    assert (settings.port, settings.admin_port) == (ports["http"], ports["admin"])
    assert str(settings.store_dir).startswith(_mount(c, "store"))
    assert not settings.allow_unauthenticated and settings.has_keys
    # SIGTERM waits for the preStop pause, then drains: the grace period covers both.
    pod = deployment["spec"]["template"]["spec"]
    pause = c["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] >= pause + settings.drain_timeout + 5


def _image_kind(c: Obj) -> str:
    return "gpu" if str(c["image"]).endswith("-gpu") else "cpu"


def _mount(c: Obj, volume: str) -> str:
    [path] = [m["mountPath"] for m in c["volumeMounts"] if m["name"] == volume]
    return str(path)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_literal_secrets(overlay: str) -> None:
    text = render_text(overlay)
    assert not re.search(r"\bhf_[A-Za-z0-9]{20,}|\bsk-[A-Za-z0-9]{20,}", text)
    objs = render(overlay)
    for o in objs:
        if o["kind"] == "ConfigMap":
            assert not [k for k in o["data"] if any(w in k.upper() for w in SECRET_WORDS)]
    for d in of_kind(objs, "Deployment"):
        for c in d["spec"]["template"]["spec"]["containers"]:
            for var in c.get("env", []):
                if any(w in var["name"] for w in SECRET_WORDS):
                    assert "value" not in var or var["name"].endswith("_PATH"), var
    # Keys reach hotswap as files of Secret volumes: the key file and the Hub token.
    deployment = one(objs, "Deployment", "hotswap")
    c = container(deployment, "hotswap")
    secrets = {v["name"]: v["secret"] for v in deployment["spec"]["template"]["spec"]["volumes"]
               if "secret" in v}
    assert {s["secretName"] for s in secrets.values()} == {"hotswap-keys", "hotswap-hf-token"}
    assert [s for s in secrets.values() if s.get("optional")] == [secrets["hf-token"]]
    key_file = _flags(c["args"])["api-key-file"]
    token_file = {v["name"]: v.get("value") for v in c["env"]}["HF_TOKEN_PATH"]
    for path, volume in ((key_file, "keys"), (token_file, "hf-token")):
        mount = _mount(c, volume)
        assert path.rpartition("/")[0] == mount
        assert path.rpartition("/")[2] in [i["path"] for i in secrets[volume]["items"]]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_are_hardened(overlay: str) -> None:
    uid = _dockerfile_uid()
    for d in of_kind(render(overlay), "Deployment"):
        pod = d["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert "memory" in c["resources"]["limits"] and c["resources"]["requests"]
        if d["metadata"]["name"] == "hotswap":
            assert pod["securityContext"]["runAsUser"] == uid
            assert pod["automountServiceAccountToken"] is False
            assert pod["topologySpreadConstraints"][0]["topologyKey"] == "kubernetes.io/hostname"
            mounts = {m["mountPath"] for m in container(d, "hotswap")["volumeMounts"]}
            # Everything the server writes is a volume (the root filesystem is read-only).
            env = dockerfile_env(DOCKERFILES[0])
            assert {"/tmp", "/dev/shm", env["HOTSWAP_HOME"]} <= mounts


_UNITS = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40}


def _bytes(quantity: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([KMGT]i)?", quantity).groups()  # type: ignore[union-attr]
    return int(number) * _UNITS.get(unit or "", 1)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_disk_volumes_fit_the_ephemeral_storage_limit(overlay: str) -> None:
    """kubelet evicts a pod whose disk-backed emptyDirs outgrow its ephemeral-storage
    limit: their size limits must fit under it (the GPU home holds the model download)."""
    deployment = one(render(overlay), "Deployment", "hotswap")
    disk = sum(_bytes(v["emptyDir"]["sizeLimit"])
               for v in deployment["spec"]["template"]["spec"]["volumes"]
               if "emptyDir" in v and v["emptyDir"].get("medium") != "Memory")
    limit = container(deployment, "hotswap")["resources"]["limits"]["ephemeral-storage"]
    assert disk <= _bytes(limit)


def _dockerfile_uid() -> int:
    uids = set()
    for path in DOCKERFILES:
        [user] = [line.split()[1] for line in path.read_text().splitlines()
                  if line.startswith("USER ")]
        uids.add(int(user.split(":")[0]))
    [uid] = uids
    return uid


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ports_and_names_agree(overlay: str) -> None:
    objs = render(overlay)
    deployment = one(objs, "Deployment", "hotswap")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = one(objs, "Service", "hotswap")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    ports = _ports(_server(objs))
    service_ports = {p["name"]: p for p in service["spec"]["ports"]}
    for port in service_ports.values():
        assert port["targetPort"] in ports
    [monitor] = of_kind(objs, "ServiceMonitor")
    selects = monitor["spec"]["selector"]["matchLabels"].items()
    assert selects <= service["metadata"]["labels"].items()
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= set(service_ports)
    # Only hotswap's Service is scraped as job "hotswap".
    scraped = [s for s in of_kind(objs, "Service")
               if selects <= s["metadata"]["labels"].items()]
    assert scraped == [service]
    pvc = one(objs, "PersistentVolumeClaim", "hotswap-store")
    claims = [v["persistentVolumeClaim"]["claimName"]
              for v in deployment["spec"]["template"]["spec"]["volumes"]
              if "persistentVolumeClaim" in v]
    assert claims == ["hotswap-store"]
    shared = overlay == "multi-replica"
    assert pvc["spec"]["accessModes"] == (["ReadWriteMany"] if shared else ["ReadWriteOnce"])
    assert (deployment["spec"]["replicas"] > 1) == shared
    # Several pods on one ReadWriteOnce volume can not roll: recreate instead.
    assert (deployment["spec"]["strategy"]["type"] == "RollingUpdate") == shared
    [pdb] = of_kind(objs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policy_keeps_admin_inside_the_namespace(overlay: str) -> None:
    objs = render(overlay)
    policy = one(objs, "NetworkPolicy", "hotswap")
    pod_labels = one(objs, "Deployment", "hotswap")["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    rules = {p["port"]: rule.get("from") for rule in policy["spec"]["ingress"]
             for p in rule["ports"]}
    assert set(rules) == set(_ports(_server(objs)))
    assert rules["http"] is None  # any source
    # Only this namespace's pods that say they administer adapters.
    assert rules["admin"] == [
        {"podSelector": {"matchLabels": {"hotswap.dev/admin-client": "true"}}}]
    for d in of_kind(objs, "Deployment"):
        assert "hotswap.dev/admin-client" not in d["spec"]["template"]["metadata"]["labels"]
    # Every pod of the overlay has a policy.
    for d in of_kind(objs, "Deployment"):
        labels = d["spec"]["template"]["metadata"]["labels"]
        assert [p for p in of_kind(objs, "NetworkPolicy")
                if p["spec"]["podSelector"]["matchLabels"].items() <= labels.items()]


def test_gpu_overlay_asks_for_as_many_gpus_as_tensor_parallel_ranks() -> None:
    objs = render("gpu")
    deployment = one(objs, "Deployment", "hotswap")
    resources = container(deployment, "hotswap")["resources"]
    env = config_env(objs, deployment, "hotswap")
    tp = int(env["HOTSWAP_TENSOR_PARALLEL_SIZE"])
    assert resources["limits"]["nvidia.com/gpu"] == tp == resources["requests"]["nvidia.com/gpu"]
    assert float(env["HOTSWAP_MEMORY_FRACTION"]) >= 0.5  # GPU: weights + KV cache
    assert "HOTSWAP_MODEL" in env
    assert _image_kind(container(deployment, "hotswap")) == "gpu"
    for overlay in ("cpu", "multi-replica"):
        c = _server(render(overlay))
        assert "nvidia.com/gpu" not in c["resources"]["limits"]
        assert _image_kind(c) == "cpu"


def test_inference_pool_routes_to_the_replicas_through_the_picker() -> None:
    objs = render("multi-replica")
    deployment = one(objs, "Deployment", "hotswap")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    pool = one(objs, "InferencePool", "hotswap")
    assert pool["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert [p["number"] for p in pool["spec"]["targetPorts"]] == [_ports(_server(objs))["http"]]
    picker = pool["spec"]["endpointPickerRef"]
    epp_service = one(objs, "Service", picker["name"])
    assert picker["port"]["number"] in {p["port"] for p in epp_service["spec"]["ports"]}
    epp = one(objs, "Deployment", "hotswap-epp")
    epp_pod = epp["spec"]["template"]
    assert epp_service["spec"]["selector"].items() <= epp_pod["metadata"]["labels"].items()
    epp_ports = _ports(container(epp, "epp"))
    for port in epp_service["spec"]["ports"]:
        assert port["targetPort"] in epp_ports
    args = _flags(container(epp, "epp")["args"])
    assert args["pool-name"] == pool["metadata"]["name"]
    assert args["pool-group"] == pool["apiVersion"].split("/")[0]
    # The picker's config file is the ConfigMap mounted where --config-file points.
    [config_volume] = [v for v in epp_pod["spec"]["volumes"] if "configMap" in v]
    config_map = one(objs, "ConfigMap", config_volume["configMap"]["name"])
    mount = _mount(container(epp, "epp"), config_volume["name"])
    directory, _, file_name = args["config-file"].rpartition("/")
    assert directory == mount and file_name in config_map["data"]
    config = yaml.safe_load(config_map["data"][file_name])
    assert config["kind"] == "EndpointPickerConfig"
    declared = {p["type"] for p in config["plugins"]}
    profile = {p["pluginRef"] for p in config["schedulingProfiles"][0]["plugins"]}
    assert "lora-affinity-scorer" in profile and profile <= declared
    for objective in of_kind(objs, "InferenceObjective"):
        assert objective["spec"]["poolRef"]["name"] == pool["metadata"]["name"]
    [route] = of_kind(objs, "HTTPRoute")
    [backend] = [b for rule in route["spec"]["rules"] for b in rule["backendRefs"]]
    assert (backend["kind"], backend["name"]) == ("InferencePool", pool["metadata"]["name"])
    assert backend["group"] == pool["apiVersion"].split("/")[0]
    # The picker watches the pool, the objectives and the pods: its Role grants that.
    role = one(objs, "Role", "hotswap-epp")
    granted = {(g, r) for rule in role["rules"] for g in rule["apiGroups"]
               for r in rule["resources"]}
    assert {("inference.networking.k8s.io", "inferencepools"), ("", "pods"),
            ("inference.networking.x-k8s.io", "inferenceobjectives")} <= granted
    binding = one(objs, "RoleBinding", "hotswap-epp")
    assert binding["subjects"][0]["name"] == epp_pod["spec"]["serviceAccountName"]


def test_picker_reads_hotswaps_lora_series() -> None:
    assert "hotswap_lora_requests_info" in epp_metric_names()


def test_the_overlays_are_the_ones_documented() -> None:
    readme = (DEPLOY / "README.md").read_text()
    for overlay in OVERLAYS:
        assert f"deploy/k8s/overlays/{overlay}" in readme
