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
# Compile bytecode at install time: with PYTHONDONTWRITEBYTECODE set (common in containers and CI),
# Python would otherwise recompile transformers on every start-up (seconds per command).
UV=(.venv/bin/uv pip install --python .venv/bin/python --quiet --compile-bytecode)

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
if [ ! -f .venv/.bytecode-compiled ]; then
    echo "setup: compiling bytecode (once)"
    site=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    .venv/bin/python -m compileall -q -j 0 "$site" >/dev/null || true
    touch .venv/.bytecode-compiled
fi
# checkov and kubernetes-validate live apart in .venv/infra-tools: their pins must not move .venv's
tools=.venv/infra-tools
if [ ! -f "$tools/.installed" ] || [ requirements/infra-tools.txt -nt "$tools/.installed" ]; then
    echo "setup: installing the offline infra validators into $tools"
    .venv/bin/uv venv --quiet --allow-existing --python .venv/bin/python "$tools"
    .venv/bin/uv pip install --quiet --python "$tools/bin/python" -r requirements/infra-tools.txt
    touch "$tools/.installed"
fi
.venv/bin/distilqa --version
