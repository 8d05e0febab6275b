"""deploy/kubernetes/: schema validation, and agreement of probes, ports, threads and shutdown with the app."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import dockerfile
import kubernetes_validate
import pytest
import yaml
from deployfiles import PREFIX, ROOT, setting_env_names

from resnet_api.settings import Settings

K8S = ROOT / "deploy" / "kubernetes"
# The oldest Kubernetes these manifests promise to work on, and the newest schemas shipped with the validator.
VERSIONS = ["1.29.0", kubernetes_validate.utils.latest_version()]


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def documents() -> list[dict[str, Any]]:
    return [doc for path in manifest_files() for doc in yaml.safe_load_all(path.read_text()) if doc]


def one(kind: str) -> dict[str, Any]:
    (doc,) = [d for d in documents() if d["kind"] == kind]
    return doc


@pytest.fixture(scope="module")
def deployment() -> dict[str, Any]:
    return one("Deployment")


@pytest.fixture(scope="module")
def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(c)


def cpu(quantity: str | int) -> float:
    text = str(quantity)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == [p.name for p in manifest_files()]
    images = {image["name"] for image in kustomization["images"]}
    assert one("Deployment")["spec"]["template"]["spec"]["containers"][0]["image"].split(":")[0] in images


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: p.name)
def test_manifest_is_valid_against_the_kubernetes_schema(path: Path, version: str) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_validator_rejects_a_broken_manifest(deployment: dict[str, Any]) -> None:
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["pathh"] = "/livez"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[-1], strict=True)
    broken = copy.deepcopy(deployment)
    broken["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[-1], strict=True)


def test_probes_hit_the_app_routes_on_its_port(
    container: dict[str, Any], routes: set[str], image_settings: Settings
) -> None:
    (port,) = container["ports"]
    assert port["containerPort"] == image_settings.port
    probes = {kind: container[kind]["httpGet"] for kind in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert probes["readinessProbe"]["path"] == "/readyz"
    assert probes["livenessProbe"]["path"] == "/livez"
    assert probes["startupProbe"]["path"] == "/readyz", "/livez answers while the model loads"
    for probe in probes.values():
        assert probe["path"] in routes
        assert probe["port"] == port["name"]
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120, "time for the model to load on a slow node"


def test_threads_follow_the_cpu_limit(container: dict[str, Any]) -> None:
    resources = container["resources"]
    assert cpu(resources["requests"]["cpu"]) == cpu(resources["limits"]["cpu"]), "Guaranteed QoS, no throttling"
    assert cpu(resources["limits"]["cpu"]).is_integer(), "whole CPUs: torch threads are whole"
    assert resources["requests"]["memory"] == resources["limits"]["memory"]
    env = {e["name"]: e for e in container["env"]}
    for name in [f"{PREFIX}TORCH_THREADS", f"{PREFIX}DECODE_WORKERS", "OMP_NUM_THREADS"]:
        ref = env[name]["valueFrom"]["resourceFieldRef"]
        assert ref == {"containerName": container["name"], "resource": "limits.cpu", "divisor": "1"}, name
    unknown = {name for name in env if name.startswith(PREFIX)} - setting_env_names()
    assert not unknown, f"env names no Settings field: {sorted(unknown)}"


def test_shutdown_fits_in_the_grace_period(
    deployment: dict[str, Any], container: dict[str, Any], serve_call: dict[str, Any]
) -> None:
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pause = int(command[1])
    assert pause >= 5, "time for endpoints and proxies to stop sending new requests"
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > pause + serve_call["timeout_graceful_shutdown"]


def test_container_runs_the_image_as_built(
    deployment: dict[str, Any], container: dict[str, Any], final_stage: list[dockerfile.Command]
) -> None:
    (cmd,) = [c for c in final_stage if c.cmd == "CMD"]
    assert container.get("args", list(cmd.value)) == list(cmd.value)
    assert "command" not in container, "keep the image's entrypoint (it sizes OpenMP threads)"
    (user,) = [c for c in final_stage if c.cmd == "USER"]
    pod_security = deployment["spec"]["template"]["spec"]["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert f"{pod_security['runAsUser']}:{pod_security['runAsGroup']}" == user.value[0]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    (tmp,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert "emptyDir" in volumes[tmp["name"]]
    declared = [v for c in final_stage if c.cmd == "VOLUME" for v in c.value]
    assert [m["mountPath"] for m in container["volumeMounts"]] == declared


def test_prometheus_annotations_point_at_metrics(
    deployment: dict[str, Any], container: dict[str, Any], routes: set[str]
) -> None:
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert "/metrics" in routes
    assert int(annotations["prometheus.io/port"]) == container["ports"][0]["containerPort"]


def test_service_hpa_and_pdb_select_the_deployment(deployment: dict[str, Any], container: dict[str, Any]) -> None:
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = one("Service")
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == container["ports"][0]["name"]
    pdb = one("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa = one("HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        deployment["apiVersion"],
        "Deployment",
        deployment["metadata"]["name"],
    )
    assert hpa["spec"]["minReplicas"] >= 2
    assert hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    assert pdb["spec"]["maxUnavailable"] < hpa["spec"]["minReplicas"], "a drain never takes every pod"
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu", "utilisation is relative to the CPU request, which is set"
    assert "cpu" in container["resources"]["requests"]
    rollout = deployment["spec"]["strategy"]["rollingUpdate"]
    assert rollout["maxUnavailable"] == 0


def test_readme_commands_name_real_files() -> None:
    readme = (ROOT / "README.md").read_text()
    paths = set(re.findall(r"kubectl apply -[fk] ([^\s`]+)", readme))
    assert "deploy/kubernetes/" in paths
    for path in paths - {"."}:
        assert (ROOT / path).exists(), path
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    for name in re.findall(r"kustomize edit set image ([\w.-]+)=", readme):
        assert name in {image["name"] for image in kustomization["images"]}
