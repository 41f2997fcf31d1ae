"""Provenance for training records: which code and which data made a model."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from distilqa import __version__, storage


def code_version() -> str:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"distilqa {__version__}" + (f" ({sha})" if sha else "")


def data_checksum(uri: str) -> str:
    return "sha256:" + hashlib.sha256(storage.read_bytes(uri)).hexdigest()
