#!/usr/bin/env bash
# Build the CPU step image and the serving image with podman on a machine without a registry:
#   scripts/images.sh            -> localhost/distilqa-cpu:dev, localhost/distilqa-serve:dev
# The base is Debian bookworm minbase with Python 3.11 (debootstrap, then `podman import`), given to
# the Dockerfiles as BASE_IMAGE; torch comes from a local PEP 503 index over /opt/wheels when that
# directory exists (TORCH_INDEX_URL), else from the Dockerfiles' default index. The base image also
# trusts this machine's CA certificates and points pip at them, so builds work behind a TLS proxy.
# podman here needs runc, the cgroupfs manager and no default ulimits: .images/containers.conf.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${DISTILQA_IMAGES_DIR:-.images}
BASE=localhost/distilqa-base:bookworm-py311
TAG=${TAG:-dev}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)

missing=()
for tool in podman runc debootstrap; do command -v $tool >/dev/null 2>&1 || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "images: installing ${missing[*]}"
        apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends podman runc debootstrap uidmap >/dev/null
    else
        echo "images: missing ${missing[*]} (Debian: apt-get install podman runc debootstrap)" >&2
        exit 1
    fi
fi
cat > "$WORK/containers.conf" <<CONF
[containers]
default_ulimits = []
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
CONF
export CONTAINERS_CONF="$WORK/containers.conf"

if ! podman image exists "$BASE"; then
    echo "images: debootstrap bookworm minbase with python3.11 (once)"
    root="$WORK/rootfs"
    rm -rf "$root"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$root" \
        http://deb.debian.org/debian >"$WORK/debootstrap.log" 2>&1 || { tail -20 "$WORK/debootstrap.log" >&2; exit 1; }
    if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
        cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
        chroot "$root" update-ca-certificates >/dev/null
    fi
    printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' > "$root/etc/pip.conf"
    rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"*
    tar -C "$root" -c . | podman import --change 'CMD ["python3"]' - "$BASE" >/dev/null
    rm -rf "$root"
fi

args=(--network host --build-arg "BASE_IMAGE=$BASE" --build-arg "GIT_SHA=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)")
server=""
if compgen -G "/opt/wheels/torch-2.13.0+cpu-*.whl" >/dev/null; then
    index="$WORK/torch-index"
    mkdir -p "$index/torch"
    ln -sf /opt/wheels/torch-2.13.0+cpu-*.whl "$index/torch/"
    port=${TORCH_INDEX_PORT:-38765}  # fixed: the URL is a build argument, so it is part of the layer cache key
    python3 -m http.server --bind 127.0.0.1 --directory "$index" "$port" >/dev/null 2>&1 &
    server=$!
    trap 'kill $server 2>/dev/null || true' EXIT
    args+=(--build-arg "TORCH_INDEX_URL=http://127.0.0.1:$port/")
fi
for spec in "components/Dockerfile.cpu distilqa-cpu" "serving/Dockerfile distilqa-serve"; do
    read -r file name <<<"$spec"
    echo "images: building localhost/$name:$TAG from $file"
    podman build --runtime runc "${args[@]}" -f "$file" -t "localhost/$name:$TAG" . >"$WORK/$name.build.log" 2>&1 \
        || { tail -40 "$WORK/$name.build.log" >&2; exit 1; }
done
podman images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep distilqa
