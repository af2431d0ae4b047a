"""docker-compose.yml checked without a Docker engine: files, variables, ports, images,
dependencies, settings and commands it names must all exist."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml

from infra.settings import REPO_ROOT, Settings
from jobs.cli.submit import COMPOSE_JOB_SETTINGS, FLINK_DATA, IMAGE_PYTHON

COMPOSE = REPO_ROOT / "docker-compose.yml"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
PROMETHEUS = REPO_ROOT / "infra" / "prometheus" / "prometheus.yml"
VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:[:?+-][^}]*)?\}")
PLACEHOLDERS = {"change-me", "candleflow", "admin"}


def _compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


def _services() -> dict[str, dict[str, Any]]:
    return dict(_compose()["services"])


def _env_example() -> dict[str, str]:
    out = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            k, _, v = line.partition("=")
            out[k.strip()] = v.strip()
    return out


def _env(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _published(svc: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(host ip, host port, container port) of each short-syntax port."""
    out = []
    for p in svc.get("ports") or []:
        parts = str(p).split("/")[0].split(":")
        assert len(parts) == 3, f"{p!r}: publish as IP:HOST:CONTAINER"
        out.append((parts[0], int(parts[1]), int(parts[2])))
    return out


def test_build_contexts_dockerfiles_and_bind_mounts_exist() -> None:
    for name, svc in _services().items():
        build = svc.get("build")
        if build:
            ctx = REPO_ROOT / (build if isinstance(build, str) else build["context"])
            assert ctx.is_dir(), name
            dockerfile = "Dockerfile" if isinstance(build, str) else build["dockerfile"]
            assert (ctx / dockerfile).is_file(), f"{name}: {dockerfile}"
        for vol in svc.get("volumes") or []:
            src = str(vol).split(":")[0]
            if src.startswith((".", "/")):
                assert (REPO_ROOT / src).exists(), f"{name}: bind mount {src}"
            else:
                assert src in (_compose().get("volumes") or {}), f"{name}: volume {src}"


def test_dockerfiles_copy_existing_paths_and_pin_bases() -> None:
    for df in (REPO_ROOT / "infra" / "docker").glob("*.Dockerfile"):
        text = df.read_text()
        for src in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
            for path in src.split():
                assert (REPO_ROOT / path).exists(), f"{df.name}: COPY {path}"
        for image in re.findall(r"^ARG \w+_IMAGE=(\S+)$", text, re.M):
            assert ":" in image and not image.endswith(":latest"), f"{df.name}: {image}"
    flink = (REPO_ROOT / "infra" / "docker" / "flink.Dockerfile").read_text()
    assert "flink:2.0.2-scala_2.12-java17" in flink  # = apache-flink==2.0.2 in pyproject
    assert "apache-flink==2.0.2" in (REPO_ROOT / "pyproject.toml").read_text()
    assert "sha1sum -c" in flink  # connector jars are checked


def test_every_variable_is_in_env_example() -> None:
    used = set(VAR.findall(COMPOSE.read_text()))
    missing = used - set(_env_example())
    assert not missing, f"add to .env.example: {sorted(missing)}"


def test_env_example_has_only_placeholders_and_env_is_ignored() -> None:
    env = _env_example()
    for key, value in env.items():
        if re.search(r"PASSWORD|SECRET|TOKEN|KEY", key):
            assert value in PLACEHOLDERS, f"{key}: use a placeholder in .env.example"
    rc = subprocess.run(
        ["git", "check-ignore", "-q", ".env"], cwd=REPO_ROOT, check=False
    ).returncode
    assert rc == 0, ".env must be git-ignored"
    rc = subprocess.run(
        ["git", "check-ignore", "-q", ".env.example"], cwd=REPO_ROOT, check=False
    ).returncode
    assert rc == 1, ".env.example must be committable"


def test_ports_on_loopback_and_unique() -> None:
    seen: dict[int, str] = {}
    for name, svc in _services().items():
        for ip, host, _ in _published(svc):
            assert ip == "127.0.0.1", f"{name}: {ip}:{host} is not loopback"
            assert host not in seen, f"{name}: host port {host} also used by {seen.get(host)}"
            seen[host] = name
    assert not _published(_services()["taskmanager"]), "taskmanager must stay scalable"
    assert "container_name" not in _services()["taskmanager"]


def test_images_are_pinned() -> None:
    for name, svc in _services().items():
        image = svc.get("image")
        assert image, f"{name}: name the image (pinned, or the built one with a version)"
        repo, sep, tag = image.rpartition(":")
        assert sep and repo and "/" not in tag, f"{name}: {image} has no tag"
        assert tag != "latest", f"{name}: {image}"
        assert re.search(r"\d", tag), f"{name}: {image} is not a version"


def test_depends_on_targets_exist_and_are_healthchecked() -> None:
    services = _services()
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        items = deps.items() if isinstance(deps, dict) else ((d, {}) for d in deps)
        for dep, cond in items:
            assert dep in services, f"{name} depends on unknown {dep}"
            if (cond or {}).get("condition") == "service_healthy":
                assert "healthcheck" in services[dep], f"{name}: {dep} has no healthcheck"


def test_candleflow_env_vars_are_settings() -> None:
    fields = set(Settings.model_fields)
    names = set(re.findall(r"\bCANDLEFLOW_([A-Z0-9_]+)", COMPOSE.read_text()))
    unknown = {n for n in names if n.lower() not in fields}
    assert not unknown, f"not in infra.settings.Settings: {sorted(unknown)}"
    assert set(COMPOSE_JOB_SETTINGS) <= fields


def test_prometheus_targets_are_services() -> None:
    services = _services()
    conf = yaml.safe_load(PROMETHEUS.read_text())
    targets = [
        t for job in conf["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]
    ]
    assert "predictor:3000" in targets
    for target in targets:
        host, _, port = target.rpartition(":")
        if host == "localhost":
            continue
        assert host in services, f"scrape target {target}: no such service"
        svc = services[host]
        ports = {str(p) for p in svc.get("expose") or []}
        ports |= {str(c) for _, _, c in _published(svc)}
        ports.add(_env(svc).get("CANDLEFLOW_METRICS_PORT", ""))
        assert port in ports, f"{target}: {host} does not serve port {port}"


def test_app_commands_are_real_cli_commands() -> None:
    from jobs.cli import app

    root = typer.main.get_command(app)  # typer >= 0.2x vendors click: duck-type groups
    checked = 0
    for name, svc in _services().items():
        cmd = svc.get("command")
        if not isinstance(cmd, list) or cmd[0] != "candleflow":
            continue
        node: Any = root
        for word in cmd[1:]:
            if word.startswith("-") or not hasattr(node, "get_command"):
                break
            sub = node.get_command(None, word)
            assert sub is not None, f"{name}: `{' '.join(cmd)}` is not a candleflow command"
            node = sub
        assert not hasattr(node, "get_command"), f"{name}: {cmd} names a group"
        opts = {o for p in node.params for o in getattr(p, "opts", [])}
        for word in cmd[1:]:
            if word.startswith("--"):
                assert word in opts, f"{name}: {word} is not an option of {cmd}"
        checked += 1
    assert checked >= 4
    predictor = _services()["predictor"]["command"]
    assert predictor[:3] == ["bentoml", "serve", "bentos.predictor.service:Predictor"]
    assert (REPO_ROOT / "bentos" / "predictor" / "service.py").is_file()


def test_compose_preset_matches_the_stack() -> None:
    services = _services()
    env = _env(services["jobmanager"])
    props = yaml.safe_load(env["FLINK_PROPERTIES"])
    assert props["python.executable"] == IMAGE_PYTHON
    assert IMAGE_PYTHON.startswith("/opt/venv/")
    assert (
        "UV_PROJECT_ENVIRONMENT=/opt/venv"
        in (REPO_ROOT / "infra" / "docker" / "flink.Dockerfile").read_text()
    )
    assert f"flink-data:{FLINK_DATA}" in services["taskmanager"]["volumes"]
    assert props["execution.checkpointing.dir"] == f"file://{FLINK_DATA}/checkpoints"
    assert COMPOSE_JOB_SETTINGS["kafka_bootstrap"] == env["CANDLEFLOW_KAFKA_BOOTSTRAP"]
    assert "PLAINTEXT://kafka:9092" in _env(services["kafka"])["KAFKA_ADVERTISED_LISTENERS"]
    assert COMPOSE_JOB_SETTINGS["predictor_url"] == env["CANDLEFLOW_PREDICTOR_URL"]
    assert ("127.0.0.1", 3000, 3000) in _published(services["predictor"])
    assert COMPOSE_JOB_SETTINGS["redis_host"] in services
    assert "org.apache.kafka." in props["classloader.parent-first-patterns.additional"]


@pytest.mark.parametrize("name", ["kafka", "jobmanager", "redis", "clickhouse", "predictor"])
def test_core_services_have_healthchecks(name: str) -> None:
    assert "healthcheck" in _services()[name]


def test_readme_documents_the_stack() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    assert "## Docker Compose (full stack)" in readme
    assert "candleflow submit" in readme
    assert Path(COMPOSE).name in readme


def test_every_variable_is_required() -> None:
    """`${VAR:?message}`: a missing .env stops `docker compose` with the variable's name
    instead of starting services with blank credentials (a plain `${VAR}` only warns)."""
    refs = re.findall(r"\$\{[^}]*\}", COMPOSE.read_text())
    assert refs
    loose = [r for r in refs if ":?" not in r]
    assert not loose, f"make these required (${{VAR:?...}}): {loose}"
