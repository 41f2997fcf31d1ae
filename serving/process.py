"""Run `distilqa serve` as a child process on loopback and wait until it is ready.

Used by the serving benchmark, the tests and the pipeline's local deploy step: one place that
knows how to start, probe and stop a local server.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from distilqa.errors import DistilqaError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(proc: subprocess.Popen, url: str, timeout: float, path: str = "/v2/health/ready") -> bool:
    """Poll `path` until it answers 200 (True), the process exits or time runs out (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}{path}", timeout=2) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    return False


class ServerProcess:
    def __init__(self, model: str | Path, *args: str, log: str | Path | None = None, timeout: float = 180) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(log) if log else None
        command = [sys.executable, "-m", "distilqa.cli", "serve", str(model), "--port", str(self.port), *args]
        out = open(self.log_path, "w") if self.log_path else subprocess.DEVNULL  # noqa: SIM115 - closed in stop()
        self._out = out
        self.proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        if wait_ready(self.proc, self.url, timeout):
            return
        if self.proc.poll() is not None:
            tail = self.log_path.read_text()[-2000:] if self.log_path else ""
            raise DistilqaError(f"distilqa serve exited with status {self.proc.returncode}\n{tail}")
        self.stop()
        raise DistilqaError(f"distilqa serve was not ready after {timeout:.0f}s")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if hasattr(self._out, "close"):
            self._out.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
