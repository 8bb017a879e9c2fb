"""docker-compose.yml and the Dockerfile: valid Compose, and every command they run exists here."""

from __future__ import annotations

import http.server
import importlib
import json
import re
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from celery.app.utils import find_app
from celery.bin.base import CLIContext
from celery.bin.celery import celery as celery_cli
from django.core.management import CommandError, get_commands, load_command_class
from gunicorn.config import Config as GunicornConfig
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
BIN = Path(sys.executable).parent
APP_SERVICES = {"migrate", "web", "worker", "beat"}
#: Services that run no health check, and why.
NO_HEALTHCHECK = {
    "migrate": "a one-shot step: dependants wait for it to complete successfully",
    "beat": "no cheap probe exists; the restart policy covers a crash",
}


def load_compose(path: Path = COMPOSE) -> dict[str, Any]:
    return YAML(typ="safe").load(path.read_text())


def check_jsonschema(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [BIN / "check-jsonschema", "--builtin-schema", "vendor.compose-spec", path],
        capture_output=True,
        text=True,
        timeout=120,
    )


# --- the Compose specification ---------------------------------------------------------------


def test_compose_file_is_valid_against_the_compose_specification():
    result = check_jsonschema(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_rejects_an_invalid_file(tmp_path):
    """The check is not vacuous: a condition Compose does not know fails it."""
    compose = load_compose()
    compose["services"]["web"]["depends_on"]["migrate"]["condition"] = "service_finished"
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(json.dumps(compose))  # JSON is YAML
    result = check_jsonschema(broken)
    assert result.returncode != 0
    assert "service_finished" in result.stdout + result.stderr


# --- every command exists in the project -----------------------------------------------------


def check_manage_py(args: list[str]) -> None:
    name, options = args[0], args[1:]
    commands = get_commands()
    assert name in commands, f"manage.py has no command {name!r}"
    command = load_command_class(commands[name], name)
    try:
        command.create_parser("manage.py", name).parse_args(options)
    except CommandError as error:
        pytest.fail(f"manage.py {shlex.join(args)}: {error}")


def check_gunicorn(args: list[str]) -> None:
    try:
        parsed = GunicornConfig().parser().parse_args(args)
    except SystemExit:
        pytest.fail(f"gunicorn rejects its options: {shlex.join(args)}")
    [app_uri] = parsed.args
    module_name, _, attribute = app_uri.partition(":")
    module = importlib.import_module(module_name)
    assert callable(getattr(module, attribute or "application")), app_uri


def check_celery(args: list[str]) -> None:
    """Parse the arguments as the celery command would, against the project's app."""
    position = next((i for i, arg in enumerate(args) if arg in celery_cli.commands), None)
    assert position is not None, f"no celery subcommand in {args}"
    context = celery_cli.make_context("celery", args[: position + 1])
    app = find_app(context.params["app"])
    assert app.main == "config", "celery -A must name the project's Celery app"
    context.obj = CLIContext(app=app, no_color=True, workdir=None, quiet=True)
    name = args[position]
    try:
        sub = celery_cli.commands[name].make_context(name, args[position + 1 :], parent=context)
    except click.UsageError as error:
        pytest.fail(f"celery {shlex.join(args)}: {error.format_message()}")
    if name == "worker":
        assert sub.params["pool"].__module__ == "celery.concurrency.thread"
    if name == "inspect":
        assert callable(getattr(app.control.inspect(), sub.params["command"], None))
    if name == "beat":
        assert app.conf.beat_schedule, "beat would schedule nothing"
        app.loader.import_default_modules()  # what a worker does at start: find the tasks
        registered = set(app.tasks)
        for entry in app.conf.beat_schedule.values():
            assert entry["task"] in registered, f"beat schedules an unknown task {entry['task']}"


def check_command(argv: list[str]) -> None:
    program, args = argv[0], argv[1:]
    if program == "python" and args[:1] == ["manage.py"]:
        check_manage_py(args[1:])
    elif program == "python" and args[:1] and args[0].endswith(".py"):
        assert (ROOT / args[0]).is_file(), f"{args[0]} does not exist"
    elif program == "gunicorn":
        check_gunicorn(args)
    elif program == "celery":
        check_celery(args)
    else:
        pytest.fail(f"a command this test does not know how to check: {shlex.join(argv)}")


def as_argv(command: str | list[str]) -> list[str]:
    """A command as Compose runs it: "$$" is a literal "$"."""
    if isinstance(command, str):
        return shlex.split(command.replace("$$", "$"))
    return [part.replace("$$", "$") for part in command]


def healthcheck_argv(test: list[str]) -> list[str] | None:
    kind, rest = test[0], test[1:]
    if kind == "CMD":
        return as_argv(rest)
    if kind == "CMD-SHELL":
        return as_argv(rest[0])
    return None


def test_every_app_service_command_exists_in_the_project():
    services = load_compose()["services"]
    assert APP_SERVICES <= set(services)
    for name in APP_SERVICES:
        service = services[name]
        assert service.get("build") == ".", f"{name} must run the project's image"
        check_command(as_argv(service["command"]))
        if "healthcheck" in service:
            check_command(healthcheck_argv(service["healthcheck"]["test"]))


def test_the_dockerfile_commands_exist_in_the_project():
    text = DOCKERFILE.read_text()
    [cmd] = re.findall(r"^CMD (\[.*\])$", text, flags=re.MULTILINE)
    check_command(json.loads(cmd))
    joined = text.replace("\\\n", " ")
    manage_calls = re.findall(r"python manage\.py ([^&\n]+)", joined)
    assert any(call.startswith("collectstatic") for call in manage_calls)
    for call in manage_calls:
        check_manage_py(shlex.split(call))


def test_the_worker_runs_the_threads_pool_with_20_threads():
    command = load_compose()["services"]["worker"]["command"]
    assert command[:4] == ["celery", "-A", "config", "worker"]
    assert "--pool threads" in " ".join(command)
    assert "--concurrency 20" in " ".join(command)


# --- the stack's shape -----------------------------------------------------------------------


def test_services_have_health_checks_and_start_in_order():
    compose = load_compose()
    services = compose["services"]
    assert {"db", "redis", "migrate", "web", "worker", "beat", "mailpit"} <= set(services)
    for name, service in services.items():
        if name in NO_HEALTHCHECK:
            assert "healthcheck" not in service
        else:
            assert service["healthcheck"]["test"], name
        for dependency, rule in service.get("depends_on", {}).items():
            condition = rule["condition"]
            if dependency == "migrate":
                assert condition == "service_completed_successfully", name
            else:
                assert condition == "service_healthy", f"{name} → {dependency}"
                assert "healthcheck" in services[dependency]
    for name in APP_SERVICES - {"migrate"}:
        assert services[name]["depends_on"]["migrate"]["condition"] == (
            "service_completed_successfully"
        )
    assert services["migrate"]["depends_on"]["db"]["condition"] == "service_healthy"
    assert services["migrate"]["restart"] == "no"
    assert services["mailpit"]["profiles"] == ["staging"]


def test_state_lives_in_named_volumes_and_redis_persists_as_a_broker():
    compose = load_compose()
    declared = set(compose["volumes"])
    for name, service in compose["services"].items():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            assert source in declared, f"{name} mounts {source}, not a named volume"
    assert {"postgres-data", "redis-data"} <= declared
    redis_command = " ".join(compose["services"]["redis"]["command"])
    assert "--appendonly yes" in redis_command
    assert "--maxmemory-policy noeviction" in redis_command


def test_third_party_images_are_pinned():
    for name, service in load_compose()["services"].items():
        if "build" in service:
            continue
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin {image}"


def test_every_variable_compose_reads_is_documented_in_env_example():
    documented = set(
        re.findall(r"^#? ?([A-Z][A-Z0-9_]*)=", (ROOT / ".env.example").read_text(), re.MULTILINE)
    )
    used = set(re.findall(r"(?<!\$)\$\{([A-Z][A-Z0-9_]*)", COMPOSE.read_text()))  # $$ escapes
    assert used - documented == set()
    required = {"SECRET_KEY", "ALLOWED_HOSTS", "NOTIFICATIONS_ENCRYPTION_KEYS", "CELERY_BROKER_URL"}
    assert required <= documented
    for service in APP_SERVICES:
        env_files = load_compose()["services"][service]["env_file"]
        assert [entry["path"] for entry in env_files] == [".env"]


def test_the_image_runs_as_a_non_root_user_and_ships_what_compose_runs():
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim$", text, re.MULTILINE)
    users = re.findall(r"^USER (\S+)$", text, re.MULTILINE)
    assert users and users[-1] not in {"root", "0"}
    # Nothing runs as root after the switch.
    assert text.rindex("USER ") > text.rindex("RUN ")
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".env", ".venv", ".git", "var"} <= set(ignored)
    assert not {"scripts", "config", "notifications", "manage.py"} & set(ignored)


# --- the web service's container probe -------------------------------------------------------


@pytest.fixture
def http_status_server() -> Iterator[tuple[str, list[int]]]:
    """A loopback HTTP server answering /healthz with the status at the head of the list."""
    statuses = [200]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(statuses[0])
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/healthz", statuses
    server.shutdown()
    server.server_close()
    thread.join(5)


def probe(*args: str) -> int:
    script = ROOT / "scripts" / "healthcheck.py"
    return subprocess.run(
        [sys.executable, script, *args], capture_output=True, timeout=30
    ).returncode


def test_web_probe_passes_while_gunicorn_answers_and_fails_when_it_does_not(
    http_status_server, closed_port
):
    url, statuses = http_status_server
    assert probe(url) == 0
    statuses[0] = 503  # the broker or the workers are down: the web server itself is fine
    assert probe(url) == 0
    assert probe(url, "--strict") == 1
    statuses[0] = 500
    assert probe(url) == 1
    assert probe(f"http://127.0.0.1:{closed_port}/healthz", "--timeout", "2") == 1
