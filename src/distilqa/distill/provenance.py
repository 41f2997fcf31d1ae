"""Provenance for training records: which code and which data made a model."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

from distilqa import __version__, storage

GIT_SHA_ENV = "DISTILQA_GIT_SHA"  # set in the images at build time (--build-arg GIT_SHA): they have no .git


def git_sha() -> str:
    """The commit the running code was built from: the image's build argument, else this checkout's HEAD."""
    if os.environ.get(GIT_SHA_ENV):
        return os.environ[GIT_SHA_ENV].strip()
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def code_version() -> str:
    sha = git_sha()
    return f"distilqa {__version__}" + (f" ({sha})" if sha else "")


def data_checksum(uri: str) -> str:
    return "sha256:" + hashlib.sha256(storage.read_bytes(uri)).hexdigest()
