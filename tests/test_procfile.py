"""The Procfile's worker, beat and flower commands start against the real broker."""

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, wait_for
from worker.emulator.process import free_port


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip() and not line.startswith("#"))


@pytest.fixture
def run_entry(services, tmp_path):
    procs = []

    def run(name: str, port: int | None = None, env: dict | None = None) -> tuple[subprocess.Popen, Path]:
        log = tmp_path / f"{name}.log"
        env = {**os.environ, **services, **({"PORT": str(port)} if port else {}), **(env or {})}
        bindir = Path(os.sys.executable).parent
        env["PATH"] = f"{bindir}:{env.get('PATH', '')}"
        proc = subprocess.Popen(["bash", "-c", procfile()[name]], cwd=tmp_path, env=env,
                                stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(proc)
        return proc, log

    yield run
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def test_procfile_names_every_process():
    assert {"worker", "beat", "flower", "api", "emulator"} <= set(procfile())


def test_worker_entry_starts(run_entry):
    proc, log = run_entry("worker")
    wait_for(lambda: " ready." in log.read_text() or proc.poll() is not None, timeout=60)
    assert proc.poll() is None, log.read_text()[-2000:]


def test_beat_entry_starts_and_sends_jobs(run_entry):
    proc, log = run_entry("beat")
    wait_for(lambda: "Sending due task" in log.read_text() or proc.poll() is not None, timeout=60)
    assert proc.poll() is None, log.read_text()[-2000:]


def test_flower_entry_refuses_to_start_without_authentication(run_entry):
    proc, log = run_entry("flower", free_port(), env={"FLOWER_BASIC_AUTH": "", "FLOWER_AUTH": ""})
    assert proc.wait(30) == 1
    assert "FLOWER_BASIC_AUTH" in log.read_text()


def test_flower_entry_serves(run_entry):
    port = free_port()
    proc, log = run_entry("flower", port, env={"FLOWER_BASIC_AUTH": "ops:secret"})

    def up():
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthcheck", timeout=2).status_code == 200
        except httpx.HTTPError:
            return proc.poll() is not None

    wait_for(up, timeout=60)
    assert proc.poll() is None, log.read_text()[-2000:]
