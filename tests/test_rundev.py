"""`make run`: refuses a busy port with a non-zero exit, and ends with a summary once it serves.

These run the Makefile's own command, as a developer would, on a private ``VAR_DIR``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.availability import require_service
from tests.loopback import LOOPBACK, free_port

ROOT = Path(__file__).resolve().parent.parent
MAKE = shutil.which("make")


def make_run(tmp_path: Path, **env: int) -> subprocess.Popen:
    require_service(MAKE is not None, "make", "apt-get install make")
    environment = {
        **os.environ,
        "VAR_DIR": str(tmp_path),
        "PYTHONUNBUFFERED": "1",
        **{name: str(value) for name, value in env.items()},
    }
    environment.pop("DJANGO_SETTINGS_MODULE", None)  # the development settings, as in a shell
    environment.pop("DATABASE_URL", None)
    return subprocess.Popen(
        # The suite's interpreter, so no second virtualenv is made for the test.
        [MAKE, "--no-print-directory", "run", f"PY={sys.executable}", f"VENV={Path(sys.prefix)}"],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


@pytest.fixture
def busy_port():
    with socket.socket() as listener:
        listener.bind((LOOPBACK, 0))
        listener.listen()
        yield listener.getsockname()[1]


@pytest.mark.parametrize("variable", ["PORT", "SINK_PORT"])
def test_a_busy_port_exits_non_zero_saying_which_and_what_to_set(tmp_path, busy_port, variable):
    ports = {"PORT": free_port(), "SINK_PORT": free_port(), variable: busy_port}
    process = make_run(tmp_path, **ports)
    output, _ = process.communicate(timeout=180)
    assert process.returncode != 0
    assert f"Port {busy_port} on 127.0.0.1 is in use" in output
    assert f"{variable}={busy_port + 1}" in output
    assert "The admin is ready" not in output


def test_ends_with_a_summary_once_the_admin_answers_and_stops_on_ctrl_c(tmp_path):
    port, sink_port = free_port(), free_port()
    process = make_run(tmp_path, PORT=port, SINK_PORT=sink_port)
    lines = []
    try:
        for line in process.stdout:
            lines.append(line)
            if line.startswith("Press Ctrl-C"):
                break
        output = "".join(lines)
        assert f"The admin is ready: http://127.0.0.1:{port}/admin/" in output
        assert f"password in {tmp_path / 'admin_password'}" in output
        assert f"mail sink: 127.0.0.1:{sink_port}" in output
        # Quiet: no Celery banner, no request log, no kombu warning, no SMTP command log.
        assert len(lines) <= 10, output
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/admin/login/", timeout=10) as page:
            assert page.status == 200
        socket.create_connection((LOOPBACK, sink_port), timeout=5).close()
    finally:
        os.killpg(process.pid, signal.SIGINT)
        rest, _ = process.communicate(timeout=60)
    # make re-raises the Ctrl-C it saw (as a shell shows it: 130); rundev itself stopped cleanly.
    assert process.returncode in (0, -signal.SIGINT), rest
    assert "Stopped." in rest
    assert "Traceback" not in rest


def test_manage_py_with_the_embedded_broker_prints_no_kombu_warning(tmp_path):
    environment = {**os.environ, "VAR_DIR": str(tmp_path)}
    environment.pop("DJANGO_SETTINGS_MODULE", None)
    environment.pop("DATABASE_URL", None)

    def manage(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=environment,
            capture_output=True,
            text=True,
            timeout=120,
        )

    assert manage("migrate", "-v", "0").returncode == 0
    queued = manage("sendtestemail", "you@example.com")  # publishes to the broker
    assert queued.returncode == 0, queued.stderr
    assert queued.stdout == "Queued 1 message; see the delivery log.\n"
    assert "No hostname was supplied" not in queued.stderr
