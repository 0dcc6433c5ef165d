"""docker-compose.yml as data: services, wiring, health checks and secrets (no Docker needed)."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml
from mlflow.server.security_utils import is_allowed_host_header
from typer.testing import CliRunner

from kwx.cli import app
from kwx.config import MatrixConfig, load_config

REPO = Path(__file__).resolve().parent.parent
RAW = (REPO / "docker-compose.yml").read_text()
COMPOSE = yaml.safe_load(RAW)
SERVICES = COMPOSE["services"]
# ${VAR}, ${VAR:-default}, ${VAR:?err} are compose interpolation; $${VAR} is left to the container's shell.
COMPOSE_VAR = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:[:?+-][^}]*)?\}")
CONTAINER_VAR = re.compile(r"\$\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
ONE_SHOT = {"create-bucket", "migrate"}


def _env_example() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in (REPO / ".env.example").read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def _command(service: str) -> list[str]:
    command = SERVICES[service]["command"]
    return command if isinstance(command, list) else command.split()


def _flag(service: str, name: str) -> str:
    values = [arg.split("=", 1)[1] for arg in _command(service) if arg.startswith(f"{name}=")]
    assert len(values) == 1, f"{service}: {name} given {len(values)} times"
    return values[0]


def test_the_stack_has_its_services():
    assert {"postgres", "minio", "create-bucket", "mlflow", "migrate", "serve-rt", "lifecycle"} <= set(SERVICES)
    assert _command("serve-rt")[0] == "serve-rt" and _command("migrate") == ["db", "upgrade"]
    assert _command("lifecycle")[0] == "schedule"
    for name, service in SERVICES.items():
        image = service.get("image", "")
        assert "build" in service or re.fullmatch(r"[\w./-]+:[\w.-]+", image), f"{name}: unpinned image {image!r}"
        assert not image.endswith(":latest"), name


@pytest.mark.parametrize(("service", "port"), [("postgres", 5432), ("minio", 9000), ("mlflow", 5000),
                                               ("dashboard", 8050)])
def test_ports_are_published_on_loopback_only(service, port):
    assert f"127.0.0.1:{port}:{port}" in SERVICES[service]["ports"]
    for mapping in (m for s in SERVICES.values() for m in s.get("ports", [])):
        assert str(mapping).startswith("127.0.0.1:"), mapping


def test_long_running_services_have_health_checks_and_restart():
    for name in ("postgres", "minio", "mlflow", "serve-rt", "lifecycle", "dashboard"):
        check = SERVICES[name]["healthcheck"]
        assert check["test"][0] in {"CMD", "CMD-SHELL"} and check["retries"] >= 3, name
        assert SERVICES[name]["restart"] == "unless-stopped", name
    assert "/health" in " ".join(SERVICES["mlflow"]["healthcheck"]["test"])


def test_serve_rt_health_check_is_a_real_kwx_command():
    test = SERVICES["serve-rt"]["healthcheck"]["test"]
    assert test[1:4] == ["kwx", "rt", "status"] and "--max-age" in test
    help_text = CliRunner().invoke(app, ["rt", "status", "--help"]).output
    assert "--max-age" in help_text


def _option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def _on_host(args: list[str], tmp_path: Path) -> list[str]:
    """A container's kwx arguments with its mounts replaced by the repository's configs and a temp state dir."""
    volumes = {target: source for source, target, *_ in (v.split(":") for v in SERVICES["lifecycle"]["volumes"])}
    assert volumes == {"/app/configs": "./configs", "/state": "lifecycle-state"}
    host = {"/app/configs": str(REPO / "configs"), "/state": str(tmp_path)}
    for target, source in host.items():
        args = [arg.replace(target, source) if arg.startswith(target) else arg for arg in args]
    return args


def test_lifecycle_schedules_the_mounted_matrix_and_keeps_its_state_in_a_volume(tmp_path):
    service = SERVICES["lifecycle"]
    command = _command("lifecycle")
    assert service["profiles"] == ["lifecycle"] and service["environment"] == SERVICES["serve-rt"]["environment"]
    assert "./configs:/app/configs:ro" in service["volumes"] and "lifecycle-state:/state" in service["volumes"]
    assert _option(command, "--matrix") == "/app/configs/matrix.yaml"
    assert _option(command, "--state").startswith("/state/")
    assert "--once" not in command and "--list" not in command  # the long-running service itself
    assert service["restart"] == "unless-stopped"
    # The container's own arguments, run on the host against the repository's configs.
    result = CliRunner().invoke(app, _on_host([*command, "--list"], tmp_path))
    assert result.exit_code == 0, result.output
    members = load_config(REPO / "configs" / "matrix.yaml", MatrixConfig).load_members()
    for _, config in members:  # a weekly retrain and a daily monitor of every config of the matrix
        for kind in ("retrain", "monitor"):
            assert f"{kind} {config.city}/{config.bracket}" in result.output


def test_lifecycle_health_check_lists_the_same_schedule(tmp_path):
    test = SERVICES["lifecycle"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "kwx", "schedule"] and test[-1] == "--list"
    command = _command("lifecycle")
    for option in ("--matrix", "--state"):
        assert _option(test, option) == _option(command, option), option
    result = CliRunner().invoke(app, _on_host(test[2:], tmp_path))
    assert result.exit_code == 0, result.output
    assert not any(tmp_path.iterdir()), "the health check wrote a state file"


def test_depends_on_waits_for_health_or_completion():
    expected = {
        "create-bucket": {"minio": "service_healthy"},
        "mlflow": {"postgres": "service_healthy", "create-bucket": "service_completed_successfully"},
        "migrate": {"postgres": "service_healthy"},
        "serve-rt": {"migrate": "service_completed_successfully", "mlflow": "service_healthy"},
        "lifecycle": {"migrate": "service_completed_successfully", "mlflow": "service_healthy"},
    }
    for service, deps in expected.items():
        assert {k: v["condition"] for k, v in SERVICES[service]["depends_on"].items()} == deps, service
    for name, service in SERVICES.items():
        for dep, spec in service.get("depends_on", {}).items():
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in SERVICES[dep], f"{name} waits for {dep}'s health, which it never reports"
            if spec["condition"] == "service_completed_successfully":
                assert dep in ONE_SHOT and SERVICES[dep]["restart"] == "no", f"{name} waits for {dep} to exit"


def test_state_lives_in_named_volumes():
    declared = set(COMPOSE["volumes"])
    assert declared == {"pgdata", "miniodata", "lifecycle-state"}
    assert "pgdata:/var/lib/postgresql/data" in SERVICES["postgres"]["volumes"]
    assert "miniodata:/data" in SERVICES["minio"]["volumes"]
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            assert source.startswith("./") or source in declared, f"{name}: undeclared volume {source}"
            if source.startswith("./"):
                assert (REPO / source).exists() and volume.endswith(":ro"), volume


def test_every_variable_is_defined_in_env_example():
    example = _env_example()
    used = set(COMPOSE_VAR.findall(RAW))
    assert used, "the compose file reads nothing from .env"
    assert used <= set(example), f"not in .env.example: {sorted(used - set(example))}"
    assert set(example) <= used, f".env.example defines unused: {sorted(set(example) - used)}"
    for name, service in SERVICES.items():  # $${VAR} must reach the container through its environment
        for var in CONTAINER_VAR.findall(yaml.safe_dump(service)):
            assert var in service.get("environment", {}), f"{name}: {var} not in its environment"
    assert "/.env" in (REPO / ".gitignore").read_text().splitlines()


def test_no_secret_is_committed():
    example = _env_example()
    for key, value in example.items():
        if re.search(r"PASSWORD|SECRET|KEY", key):
            assert value == "" or value.startswith("change-me"), f".env.example {key} is not a placeholder"
    for name, service in SERVICES.items():
        environment = service.get("environment", {})
        for key, value in environment.items():
            if re.search(r"PASSWORD|SECRET|KEY", key):
                assert COMPOSE_VAR.fullmatch(str(value)), f"{name}: {key} is a literal, not ${{...}}"
    for userinfo in re.findall(r"://([^/@\s]+)@", RAW):  # user:password@host in any URL
        user, _, password = userinfo.partition(":")
        assert COMPOSE_VAR.fullmatch(user) and COMPOSE_VAR.fullmatch(password), userinfo


def test_mlflow_uses_postgres_backend_and_s3_artifacts():
    backend = urlparse(_flag("mlflow", "--backend-store-uri"))
    assert backend.scheme == "postgresql+psycopg2"  # a bare postgresql:// means psycopg 3 to SQLAlchemy 2.1
    assert backend.hostname == "postgres" and backend.path == "/mlflow"
    assert "CREATE DATABASE mlflow;" in (REPO / "docker" / "postgres-init.sql").read_text()
    destination = _flag("mlflow", "--artifacts-destination")
    assert destination.startswith("s3://${MLFLOW_ARTIFACT_BUCKET}/")
    assert "$${MLFLOW_ARTIFACT_BUCKET}" in " ".join(_command("create-bucket"))
    env = SERVICES["mlflow"]["environment"]
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert env["AWS_ACCESS_KEY_ID"] == "${MINIO_ROOT_USER}" and env["AWS_SECRET_ACCESS_KEY"] == "${MINIO_ROOT_PASSWORD}"


@pytest.mark.parametrize("service", ["migrate", "serve-rt", "lifecycle", "dashboard", "kwx"])
def test_kwx_services_reach_the_database_and_the_tracking_server(service):
    env = SERVICES[service]["environment"]
    database = urlparse(env["KWX_DATABASE_URL"])
    assert database.scheme == "postgresql+psycopg2" and database.hostname == "postgres"
    assert database.path.lstrip("/") == SERVICES["postgres"]["environment"]["POSTGRES_DB"]
    tracking = urlparse(env["MLFLOW_TRACKING_URI"])
    assert tracking.scheme == "http" and f"--port={tracking.port}" in _command("mlflow")
    # MLflow's DNS-rebinding guard must accept the Host header these containers send.
    allowed = _flag("mlflow", "--allowed-hosts").split(",")
    assert is_allowed_host_header(allowed, tracking.netloc)
    assert is_allowed_host_header(allowed, "localhost:5000")  # the CLI on the host


def test_the_dashboard_listens_beyond_loopback_only_with_the_token_from_env():
    command = _command("dashboard")
    assert command[:3] == ["dashboard", "--host", "0.0.0.0"] and "/healthz" in str(SERVICES["dashboard"]["healthcheck"])
    assert SERVICES["dashboard"]["environment"]["KWX_DASHBOARD_TOKEN"] == "${KWX_DASHBOARD_TOKEN}"
    assert _env_example()["KWX_DASHBOARD_TOKEN"].startswith("change-me")
