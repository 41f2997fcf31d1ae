"""docs/runbook.md runs in order: its Secret and overlay commands, executed with kubectl offline.

The runbook's own bash blocks run here with a `kubectl` that does what needs no cluster for real
(`create --dry-run=client`, `annotate --local`, `kustomize`) and records what would be applied
(`apply -f -`, `apply -k DIR`), in order. Then: no apply overwrites a Secret an earlier step created
(an empty template applied over it would wipe its data), and every Secret a rendered workload needs
exists, with the keys it reads, before the overlay is applied.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RUNBOOK = ROOT / "docs" / "runbook.md"

SHIM = r"""
set -euo pipefail
kubectl() {
  local out="$RECORD/$(date +%s%N)"
  if [ "$*" = "apply -f -" ]; then cat > "$out-stdin.yaml"
  elif [ "${1:-}" = apply ] && [ "${2:-}" = -k ]; then command kubectl kustomize "$3" > "$out-kustomize.yaml"
  elif [[ "$*" == *--dry-run=client* || "$*" == *--local* ]]; then command kubectl "$@"
  else echo "not run here: kubectl $*" >&2
  fi
}
"""


def section(title_prefix: str) -> str:
    text = RUNBOOK.read_text()
    start = text.index(f"\n## {title_prefix}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, re.S)


def run_steps(scripts: list[str], record: Path) -> list[tuple[str, list[dict]]]:
    """Run the scripts in one bash with the kubectl shim; returns (file, objects) per apply, in order."""
    done = subprocess.run(
        ["bash", "-c", SHIM + "\n".join(scripts)],
        cwd=ROOT,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "RECORD": str(record), "HOME": str(record)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"the runbook's commands failed:\n{done.stderr[-3000:]}"
    return [(p.name, [d for d in yaml.safe_load_all(p.read_text()) if d]) for p in sorted(record.glob("*.yaml"))]


def needed_secrets(objects: list[dict]) -> dict[tuple[str, str], set[str]]:
    """(namespace, Secret) -> keys that the workloads and service accounts of a render require."""
    need: dict[tuple[str, str], set[str]] = {}
    for obj in objects:
        ns = obj["metadata"].get("namespace", "")
        if obj["kind"] == "ServiceAccount":
            for ref in obj.get("secrets", []):
                need.setdefault((ns, ref["name"]), set())
        pods = []
        if obj["kind"] in ("Deployment", "StatefulSet"):
            pods.append(obj["spec"]["template"]["spec"])
        for pod in pods:
            for volume in pod.get("volumes", []):
                if "secret" in volume and not volume["secret"].get("optional"):
                    need.setdefault((ns, volume["secret"]["secretName"]), set())
            for c in pod.get("containers", []) + pod.get("initContainers", []):
                for e in c.get("env", []):
                    ref = e.get("valueFrom", {}).get("secretKeyRef")
                    if ref and not ref.get("optional"):
                        need.setdefault((ns, ref["name"]), set()).add(ref["key"])
                for e in c.get("envFrom", []):
                    ref = e.get("secretRef")
                    if ref and not ref.get("optional"):
                        need.setdefault((ns, ref["name"]), set())
    return need


PATHS = {
    # the AWS path: steps 5 and 7 as written
    "aws": lambda: [*bash_blocks(section("5. Secrets")), *bash_blocks(section("7. "))],
    # on-prem: step 5, its SeaweedFS keys (GKE variant section), then the onprem overlay
    "onprem": lambda: [
        *bash_blocks(section("5. Secrets")),
        bash_blocks(section("GKE variant"))[1],
        "kubectl apply -k manifests/overlays/onprem",
    ],
}


def check_applies(applied: list[tuple[str, list[dict]]]) -> dict[tuple[str, str], set[str]]:
    """The rules of the module docstring over the recorded applies; returns the Secrets created."""
    created: dict[tuple[str, str], set[str]] = {}
    for name, objects in applied:
        overlay = name.endswith("kustomize.yaml")
        if overlay:
            for (ns, secret), keys in needed_secrets(objects).items():
                assert (ns, secret) in created, f"{name}: needs Secret {ns}/{secret}, which no earlier step created"
                missing = keys - created[(ns, secret)]
                assert not missing, f"Secret {ns}/{secret} lacks {sorted(missing)}"
        for obj in objects:
            if obj["kind"] != "Secret":
                continue
            key = (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
            keys = set(obj.get("data", {}))
            assert not (overlay and key in created), (
                f"{name} applies Secret {key[0]}/{key[1]} again, over the data of step 5"
            )
            assert not overlay, f"an overlay applies Secret {key[0]}/{key[1]} (a template)"
            # a deliberate re-creation (on-prem adds the S3 keys) may add keys, never drop them
            dropped = created.get(key, set()) - keys
            assert not dropped, f"{name} re-creates Secret {key[0]}/{key[1]} without {sorted(dropped)}"
            created[key] = keys
    return created


@pytest.mark.parametrize("path", sorted(PATHS))
def test_no_step_overwrites_a_secret_and_every_needed_secret_exists_first(path, tmp_path):
    applied = run_steps(PATHS[path](), tmp_path)
    assert any(name.endswith("kustomize.yaml") for name, _ in applied), "no overlay was applied"
    created = check_applies(applied)
    assert "flask-secret-key" in created[("mlflow", "mlflow-admin")]


def test_the_check_catches_a_template_applied_over_a_secret(tmp_path):
    """The same check on a planted overlay that carries an empty mlflow-db template fails."""
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text("resources: [secret.yaml]\n")
    (overlay / "secret.yaml").write_text(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: mlflow-db, namespace: mlflow}\ntype: Opaque\n"
    )
    record = tmp_path / "record"
    record.mkdir()
    applied = run_steps([bash_blocks(section("5. Secrets"))[0], f"kubectl apply -k {overlay}"], record)
    with pytest.raises(AssertionError, match="again, over the data of step 5"):
        check_applies(applied)
