"""Run the emulators in a child process on a free loopback port (demo, tests, benchmark)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import httpx

from worker.emulator.app import Knobs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EmulatorProcess:
    def __init__(self, knobs: Knobs | None = None, port: int | None = None):
        self.knobs = knobs or Knobs()
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        # One client for every control call: a bare httpx.get builds a client, and its TLS context,
        # each time (29 ms of CPU here), which a poll at 10 Hz took from the processes it timed.
        self.http = httpx.Client(base_url=self.url, timeout=30)

    def start(self, timeout: float = 90.0) -> EmulatorProcess:  # a busy CI machine: 40 s seen
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "worker.emulator.serve", "--port", str(self.port),
             "--knobs", self.knobs.model_dump_json()],
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.http.get("/_emulator/health", timeout=1).raise_for_status()
                return self
            except httpx.HTTPError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("the emulator did not start") from None
                time.sleep(0.05)

    def records(self) -> dict:
        return self.http.get("/_emulator/records").json()

    def stats(self) -> dict:
        return self.http.get("/_emulator/stats").json()

    def drop_held(self, keep: int = 0) -> int:
        """Forget the reports held back (``hold_reports``) without pushing them, but the first ``keep``."""
        return self.http.delete("/_emulator/held", params={"keep": keep}).json()["dropped"]

    def set_knobs(self, knobs: Knobs) -> None:
        self.knobs = knobs
        self.http.put("/_emulator/knobs", content=knobs.model_dump_json(),
                      headers={"content-type": "application/json"}, timeout=5).raise_for_status()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def __enter__(self) -> EmulatorProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


__all__ = ["EmulatorProcess", "free_port", "json"]
