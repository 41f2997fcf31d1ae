#!/usr/bin/env bash
# Create .venv at the repository root and install distilqa into it (idempotent).
# Uses the CPU torch wheel in /opt/wheels when that folder exists, so no resolver pulls CUDA torch.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $($PYTHON --version)"
    "$PYTHON" -m venv .venv
fi
if [ ! -x .venv/bin/uv ]; then
    .venv/bin/python -m pip install --quiet --disable-pip-version-check uv
fi
UV=(.venv/bin/uv pip install --python .venv/bin/python --quiet)

find_links=()
if [ -d /opt/wheels ]; then
    find_links=(--find-links /opt/wheels)
    wheel=$(ls /opt/wheels/torch-2.13.0+cpu-*.whl 2>/dev/null | head -n1 || true)
    if [ -n "$wheel" ] && ! .venv/bin/python -c "import torch, sys; sys.exit(torch.__version__ != '2.13.0+cpu')" 2>/dev/null; then
        echo "setup: installing CPU torch from $wheel"
        "${UV[@]}" "$wheel"
    fi
fi

stamp=.venv/.distilqa-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ requirements/constraints.txt -nt "$stamp" ]; then
    echo "setup: installing distilqa and its dependencies into .venv"
    "${UV[@]}" "${find_links[@]}" -c requirements/constraints.txt -e ".[dev]"
    touch "$stamp"
fi
.venv/bin/distilqa --version
