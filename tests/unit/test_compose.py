"""docker-compose.yml stays consistent with Clarion's CLI and settings.

No Docker engine is needed: the file is parsed with PyYAML (which resolves the
``x-clarion-env`` anchor and ``<<`` merge keys the same way Compose does).
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from clarion.config import Settings

COMPOSE_FILE = Path(__file__).resolve().parents[2] / "docker-compose.yml"
PREFIX = "CLARION_"

# ${NAME}, ${NAME:-default}, ${NAME-default} (Compose interpolation).
_INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::?-(?P<default>[^}]*))?\}")


def load_compose(text: str) -> dict[str, Any]:
    data = yaml.safe_load(text)
    assert isinstance(data, dict), "a compose file is a mapping"
    return data


def compose_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    services = compose.get("services")
    assert isinstance(services, dict) and services, "no services defined"
    return services


def environment_of(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a mapping, whichever form the file uses."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) if "=" in item else (item, "") for item in env)
        return {key: value for key, value in pairs}
    return {key: "" if value is None else str(value) for key, value in env.items()}


def with_defaults(value: str) -> str:
    """What Compose substitutes when the referenced host variables are unset."""
    return _INTERPOLATION.sub(lambda match: match.group("default") or "", value)


def command_of(service: dict[str, Any]) -> list[str]:
    command = service.get("command")
    if isinstance(command, str):
        return shlex.split(command)
    return [str(part) for part in command or []]


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    """Dependency name -> condition, for both the list and the mapping form."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def unknown_clarion_variables(compose: dict[str, Any]) -> list[str]:
    """``service: NAME`` for every CLARION_* variable that is not a Settings field."""
    unknown = []
    for name, service in compose_services(compose).items():
        for key in environment_of(service):
            field = key.removeprefix(PREFIX).lower()
            if key.startswith(PREFIX) and field not in Settings.model_fields:
                unknown.append(f"{name}: {key}")
    return unknown


def clarion_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Services running the Clarion image: built here, or configured with CLARION_*."""
    return {
        name: service
        for name, service in compose_services(compose).items()
        if "build" in service or any(key.startswith(PREFIX) for key in environment_of(service))
    }


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose(COMPOSE_FILE.read_text(encoding="utf-8"))


def test_temporal_ui_and_databases_use_official_images(compose: dict[str, Any]) -> None:
    services = compose_services(compose)
    for name in ("postgresql", "clarion-db"):
        assert services[name]["image"].startswith("postgres:15"), name
        assert "healthcheck" in services[name], f"{name} needs a healthcheck"

    temporal = services["temporal"]
    assert temporal["image"].startswith("temporalio/auto-setup:")
    temporal_env = environment_of(temporal)
    temporal_db_env = environment_of(services["postgresql"])
    assert temporal_env["DB"] == "postgres12"
    assert temporal_env["DB_PORT"] == "5432"
    assert temporal_env["POSTGRES_SEEDS"] == "postgresql"
    assert temporal_env["POSTGRES_USER"] == temporal_db_env["POSTGRES_USER"]
    assert temporal_env["POSTGRES_PWD"] == temporal_db_env["POSTGRES_PASSWORD"]
    assert depends_on(temporal) == {"postgresql": "service_healthy"}
    assert "7233:7233" in temporal["ports"]

    ui = services["temporal-ui"]
    assert ui["image"].startswith("temporalio/ui:")
    assert environment_of(ui)["TEMPORAL_ADDRESS"] == "temporal:7233"
    assert "8080:8080" in ui["ports"]


def test_built_services_run_clarion(compose: dict[str, Any]) -> None:
    built = {name: s for name, s in compose_services(compose).items() if "build" in s}
    assert {"clarion-migrate", "clarion-worker"} <= built.keys()
    for name, service in built.items():
        args = command_of(service)
        assert args and args[0] == "clarion", f"{name} runs {args!r}, not a clarion command"


def test_built_service_commands_exist_in_the_cli(compose: dict[str, Any]) -> None:
    import starters.cli

    runner = CliRunner()
    for name, service in compose_services(compose).items():
        if "build" not in service:
            continue
        args = command_of(service)
        result = runner.invoke(starters.cli.app, [*args[1:], "--help"])
        assert result.exit_code == 0, f"{name}: `{shlex.join(args)}` is not a CLI command:\n" + (
            result.output
        )


def test_clarion_variables_are_settings(compose: dict[str, Any]) -> None:
    assert unknown_clarion_variables(compose) == []

    services = clarion_services(compose)
    assert {"clarion-migrate", "clarion-worker"} <= services.keys()
    for name, service in services.items():
        env = environment_of(service)
        url = env.get("CLARION_DATABASE_URL", "")
        assert url.startswith("postgresql+asyncpg://"), f"{name}: {url!r}"
        database_host = url.split("@", 1)[1].split("/", 1)[0].split(":", 1)[0]
        assert database_host in compose_services(compose), f"{name}: unknown host in {url!r}"
        temporal_host = env.get("CLARION_TEMPORAL_ADDRESS", "").split(":", 1)[0]
        assert temporal_host in compose_services(compose), f"{name}: no Temporal service"


def test_clarion_environment_defaults_are_valid_settings(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With nothing set on the host, every Clarion service still gets valid settings."""
    for name, service in clarion_services(compose).items():
        for key in list(os.environ):
            if key.startswith(PREFIX):
                monkeypatch.delenv(key)
        for key, value in environment_of(service).items():
            monkeypatch.setenv(key, with_defaults(value))
        settings = Settings(_env_file=None)  # type: ignore[call-arg]
        assert settings.database_url.startswith("postgresql+asyncpg://"), name
        assert settings.log_format == "json", name


def test_shared_environment_comes_from_the_extension_block(compose: dict[str, Any]) -> None:
    shared = {key: str(value) for key, value in compose["x-clarion-env"].items()}
    for name, service in clarion_services(compose).items():
        env = environment_of(service)
        assert shared.items() <= env.items(), f"{name} does not use x-clarion-env"


def test_worker_waits_for_migrations(compose: dict[str, Any]) -> None:
    services = compose_services(compose)
    migrate, worker = services["clarion-migrate"], services["clarion-worker"]
    assert command_of(migrate) == ["clarion", "db", "upgrade"]
    assert migrate["restart"] == "no"  # quoted in YAML, or it would read as False
    assert depends_on(worker)["clarion-migrate"] == "service_completed_successfully"
    assert "temporal" in depends_on(worker)
    assert command_of(worker) == ["clarion", "worker"]
    assert worker["deploy"]["replicas"] >= 2
    assert environment_of(worker)["CLARION_AUTO_MIGRATE"] == "false"


def test_clarion_services_share_their_payload_keys(compose: dict[str, Any]) -> None:
    """Every replica must open what another encrypted: the keys come from the host, or
    from the local key file in one shared CLARION_HOME volume."""
    for name, service in clarion_services(compose).items():
        env = environment_of(service)
        assert env["CLARION_PAYLOAD_KEYS"] == "${CLARION_PAYLOAD_KEYS:-}", name
        assert "clarion-home:/var/lib/clarion" in service.get("volumes", []), name
    assert "clarion-home" in compose["volumes"]


_BROKEN = """
x-env: &env
  CLARION_TEMPORAL_ADDRESS: temporal:7233
  CLARION_DATABASE_URLS: postgresql+asyncpg://clarion:clarion@clarion-db/clarion
services:
  clarion-worker:
    build: .
    command: ["clarion", "worker"]
    environment:
      <<: *env
      CLARION_TASK_QUEUE: clarion
  clarion-migrate:
    build: .
    command: clarion db upgrade
    environment:
      - CLARION_TASK_QUEUE=clarion
      - CLARION_SMTP_HOSTNAME=mail
"""


def test_validation_catches_unknown_clarion_variables() -> None:
    broken = load_compose(_BROKEN)
    assert unknown_clarion_variables(broken) == [
        "clarion-worker: CLARION_DATABASE_URLS",
        "clarion-migrate: CLARION_SMTP_HOSTNAME",
    ]
    assert command_of(compose_services(broken)["clarion-migrate"]) == ["clarion", "db", "upgrade"]
    assert with_defaults("${CLARION_SMTP_PORT:-587}") == "587"
    assert with_defaults("${CLARION_SMTP_HOST:-}") == ""
