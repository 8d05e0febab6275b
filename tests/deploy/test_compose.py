"""docker-compose.yml and what it mounts: settings, health checks, limits, profiles, proxy and monitoring."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from deployfiles import PREFIX, ROOT, setting_env_names, tool
from prometheus_client.metrics_core import Metric

from resnet_api.metrics import Metrics
from resnet_api.settings import Settings, available_cpus

API_SERVICES = ("api", "api-replica")
INTERPOLATION = re.compile(r"^\$\{(?P<name>[A-Z0-9_]+):-(?P<default>[^}]*)\}$")


def resolve(value: str) -> str:
    """A compose value as the container sees it when the shell sets nothing (`${X:-default}` -> default)."""
    match = INTERPOLATION.match(value)
    if match:
        return match.group("default")
    assert "${" not in value, f"unsupported interpolation in {value!r}"
    return value.replace("$$", "$")


def seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration):
        total += float(number) * units[unit]
    return total


def memory_bytes(size: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([kKmMgG]?)[bB]?", size).groups()  # type: ignore[union-attr]
    return int(number) * 1024 ** {"": 0, "k": 1, "m": 2, "g": 3}[unit.lower()]


def api_environment(compose: dict[str, Any], service: str) -> dict[str, str]:
    env = compose["services"][service]["environment"]
    assert isinstance(env, dict), "environment as a mapping, so YAML anchors share one block"
    return {str(k): str(v) for k, v in env.items()}


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False, cwd=ROOT)


def test_matches_the_compose_specification_schema(tmp_path: Path) -> None:
    compose_file = str(ROOT / "docker-compose.yml")
    result = run(tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", compose_file)
    assert result.returncode == 0, result.stdout + result.stderr
    # The same check rejects a misspelt key.
    broken = tmp_path / "compose.yml"
    broken.write_text("services:\n  api:\n    image: x:1\n    helthcheck: {}\n")
    assert run(tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(broken)).returncode != 0


def test_compose_lint_finds_nothing_unexplained() -> None:
    """Security lint (OWASP / CIS Docker rules); every suppression in .compose-lint.yml carries its reason."""
    result = run(
        tool("compose-lint"), "check", "-q", "--fail-on", "low", "--strict-config",
        "--config", str(ROOT / ".compose-lint.yml"), str(ROOT / "docker-compose.yml"),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load((ROOT / ".compose-lint.yml").read_text())
    reasons = [r for rule in config["rules"].values() for r in rule["exclude_services"].values()]
    assert all(len(reason) > 30 and "TODO" not in reason for reason in reasons)


def test_generated_environment_block_is_up_to_date(
    gen: ModuleType, compose_text: str, image_env: dict[str, str]
) -> None:
    assert gen.regenerate(compose_text, image_env) == compose_text, (
        "docker-compose.yml is out of date with Settings or the Dockerfile: run .venv/bin/python scripts/gen_compose_env.py"
    )


def test_every_setting_is_listed_and_nothing_else(compose_text: str, compose: dict[str, Any]) -> None:
    env = api_environment(compose, "api")
    listed = {name for name in env if name.startswith(PREFIX)}
    # Fields whose default is "unset" are listed as a comment inside the block.
    listed |= set(re.findall(rf"^  # ({PREFIX}[A-Z0-9_]+): unset by default$", compose_text, flags=re.MULTILINE))
    assert listed == setting_env_names(), (
        f"missing: {sorted(setting_env_names() - listed)}; not settings: {sorted(listed - setting_env_names())}"
    )


@pytest.mark.parametrize("service", API_SERVICES)
def test_environment_yields_the_image_defaults(
    service: str, compose: dict[str, Any], image_env: dict[str, str], clean_env: pytest.MonkeyPatch
) -> None:
    """Settings built from the compose environment equal Settings built from the image alone in a
    container with the compose CPU limit: the file shows defaults, it does not change them."""
    cpus = int(compose["services"][service]["deploy"]["resources"]["limits"]["cpus"])
    for name, value in image_env.items():
        clean_env.setenv(name, value)
    per_cpu = {name: cpus for name, field in Settings.model_fields.items() if field.default_factory is available_cpus}
    expected = Settings(**per_cpu).model_dump()  # type: ignore[arg-type]
    for name, value in api_environment(compose, service).items():
        clean_env.setenv(name, resolve(value))
    assert Settings().model_dump() == expected
    assert resolve(api_environment(compose, service)["OMP_NUM_THREADS"]) == str(cpus)


def test_the_settings_prefix_is_kept_for_settings(compose_text: str) -> None:
    interpolated = set(re.findall(r"\$\{([A-Z0-9_]+)", compose_text))
    strays = {name for name in interpolated if name.startswith(PREFIX)} - setting_env_names()
    assert not strays, f"{sorted(strays)} look like settings but are not: use another prefix"


def test_image_pinned_settings_are_not_overridable_from_the_shell(
    compose: dict[str, Any], image_env: dict[str, str]
) -> None:
    env = api_environment(compose, "api")
    for name, value in image_env.items():
        if name.startswith(PREFIX):
            assert env[name] == value, f"{name} must be the image's fixed value, not an interpolation"


@pytest.mark.parametrize("service", API_SERVICES)
def test_api_service_hardening_health_and_limits(
    service: str, compose: dict[str, Any], serve_call: dict[str, Any], routes: set[str]
) -> None:
    svc = compose["services"][service]
    assert svc["build"]["context"] == "."
    assert svc["read_only"] is True
    assert any(t.split(":")[0] == "/tmp" for t in svc["tmpfs"]), "the image's only writable path"
    assert svc["cap_drop"] == ["ALL"]
    assert svc["healthcheck"]["test"] == ["CMD", "python", "/opt/resnet-api/healthcheck.py"]
    assert seconds(svc["healthcheck"]["start_period"]) >= 30, "the model loads before /readyz answers"
    limits = svc["deploy"]["resources"]["limits"]
    assert float(limits["cpus"]) >= 1
    assert memory_bytes(limits["memory"]) >= 1024**3, "about 350 MiB peak at 32 clients, plus large decodes"
    assert svc["deploy"]["resources"]["reservations"]["memory"] == limits["memory"]
    # Stopping: uvicorn's graceful shutdown must fit in the grace period before Docker's SIGKILL.
    assert seconds(svc["stop_grace_period"]) > serve_call["timeout_graceful_shutdown"]


def test_healthcheck_matches_the_image(compose: dict[str, Any], final_stage: list[Any]) -> None:
    (check,) = [c for c in final_stage if c.cmd == "HEALTHCHECK"]
    assert compose["services"]["api"]["healthcheck"]["test"] == list(check.value)


def test_api_publishes_the_service_port(compose: dict[str, Any], image_env: dict[str, str]) -> None:
    (mapping,) = compose["services"]["api"]["ports"]
    assert mapping.rsplit(":", 1)[1] == image_env[f"{PREFIX}PORT"]
    assert "ports" not in compose["services"]["api-replica"], "replicas are reached through the proxy"


def test_profiles(compose: dict[str, Any]) -> None:
    profiles: dict[str, set[str]] = {}
    for name, svc in compose["services"].items():
        for profile in svc.get("profiles", ["(default)"]):
            profiles.setdefault(profile, set()).add(name)
    assert profiles == {
        "(default)": {"api"},
        "monitoring": {"prometheus", "grafana"},
        "replicas": {"api-replica", "proxy"},
    }
    for name, svc in compose["services"].items():
        assert "healthcheck" in svc, name
        assert svc["deploy"]["resources"]["limits"]["memory"], name
        assert svc["deploy"]["resources"]["limits"]["cpus"], name
        assert ":" in svc["image"], f"{name}: pin the image tag"
        assert not svc["image"].endswith(":latest"), name
    assert compose["services"]["api-replica"]["deploy"]["replicas"] >= 2


def test_bind_mounts_exist(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"


def mount_target(compose: dict[str, Any], service: str, source: str) -> str:
    for volume in compose["services"][service]["volumes"]:
        parts = volume.split(":")
        if parts[0] == source:
            return parts[1]
    raise AssertionError(f"{service} does not mount {source}")


def test_proxy_balances_the_replicas_and_passes_big_uploads(compose: dict[str, Any], routes: set[str]) -> None:
    assert mount_target(compose, "proxy", "./deploy/nginx/nginx.conf") == "/etc/nginx/nginx.conf"
    conf = (ROOT / "deploy" / "nginx" / "nginx.conf").read_text()
    port = Settings().port
    assert re.search(rf"^\s*server api-replica:{port}\b", conf, flags=re.MULTILINE)
    size = re.search(r"client_max_body_size (\d+)([km]?);", conf)
    assert size, "nginx's default 1m would reject most image uploads with its own 413"
    limit = int(size.group(1)) * {"": 1, "k": 1024, "m": 1024**2}[size.group(2)]
    assert limit >= Settings().max_request_bytes
    listen = re.search(r"listen (\d+);", conf)
    assert listen
    assert compose["services"]["proxy"]["ports"][0].endswith(f":{listen.group(1)}")
    probe = compose["services"]["proxy"]["healthcheck"]["test"][-1]
    assert probe == f"http://127.0.0.1:{listen.group(1)}/livez"
    assert "/livez" in routes


def test_proxy_never_replays_classifier_training_on_another_replica() -> None:
    """`non_idempotent` lets nginx resend a POST already sent: right for predictions, a duplicate for training."""
    conf = (ROOT / "deploy" / "nginx" / "nginx.conf").read_text()
    locations = dict(re.findall(r"location (\S+) \{(.*?)\}", conf, flags=re.DOTALL))
    assert set(locations) == {"/", "/v1/classifiers"}
    retries = {
        path: re.findall(r"^\s*proxy_next_upstream (.*);", body, flags=re.MULTILINE) for path, body in locations.items()
    }
    assert "non_idempotent" in retries["/"][0].split()
    assert retries["/v1/classifiers"] == ["error timeout http_502 http_503"]
    assert all("proxy_pass http://resnet_api;" in body for body in locations.values())
    assert all("proxy_set_header" not in body for body in locations.values()), "one would drop the server's headers"


def test_prometheus_scrapes_every_api_container(compose: dict[str, Any], routes: set[str]) -> None:
    assert mount_target(compose, "prometheus", "./deploy/prometheus/prometheus.yml") == "/etc/prometheus/prometheus.yml"
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    port = Settings().port
    assert all(job["metrics_path"] in routes for job in jobs.values())
    assert jobs["resnet-api"]["static_configs"][0]["targets"] == [f"api:{port}"]
    (dns,) = jobs["resnet-api-replicas"]["dns_sd_configs"]
    assert dns["names"] == ["api-replica"]
    assert dns["port"] == port


def exposed_sample_names(families: list[Metric]) -> set[str]:
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "info": ["_info"]}
    return {family.name + s for family in families for s in suffixes.get(family.type, [""])}


def test_dashboard_is_provisioned_and_queries_real_metrics(compose: dict[str, Any]) -> None:
    provisioning = mount_target(compose, "grafana", "./deploy/grafana/provisioning")
    dashboards_dir = mount_target(compose, "grafana", "./deploy/grafana/dashboards")
    assert provisioning == "/etc/grafana/provisioning"
    datasource = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    (ds,) = datasource["datasources"]
    assert ds["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/resnet-api.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == dashboards_dir
    home = compose["services"]["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert Path(home).parent.as_posix() == dashboards_dir
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards" / Path(home).name).read_text())

    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert all(t["datasource"]["uid"] == ds["uid"] for panel in dashboard["panels"] for t in panel["targets"])
    used = {name for expr in exprs for name in re.findall(r"\b((?:resnet_api|process)_[a-z_]+)\b", expr)}
    known = exposed_sample_names(list(Metrics().registry.collect()))
    assert used <= known, f"the dashboard queries metrics the service does not export: {sorted(used - known)}"
    # What the issue asks the dashboard to show.
    for metric in [
        "resnet_api_http_requests_total",
        "resnet_api_http_request_duration_seconds_bucket",
        "resnet_api_queue_wait_seconds_bucket",
        "resnet_api_batch_size_sum",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ]:
        assert metric in used, metric
    # Jobs queried are the ones Prometheus scrapes.
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    jobs = [job["job_name"] for job in config["scrape_configs"]]
    for selector in set(re.findall(r'job=~"([^"]+)"', " ".join(exprs))):
        assert all(re.fullmatch(selector, job) for job in jobs)
