"""Run a container of the rendered manifests as a process on this machine, exactly as the manifest says.

What a kubelet would do and this machine has no cluster for, done here, and nothing else:
- the container's command (the image's ENTRYPOINT when the manifest gives only args) and args;
- its environment: `value`, `valueFrom.secretKeyRef` (from the Secrets the test creates, as the runbook
  does), `valueFrom.configMapKeyRef` and `envFrom` (ConfigMaps from the same render, Secrets from the
  test's), then Kubernetes' `$(VAR)` expansion of command and args;
- cluster DNS: each Service name the manifest uses maps to the loopback address of the process
  standing in for it (PostgreSQL, the moto S3 server);
- volumes: each mountPath maps to a temporary directory.

A required Secret key or ConfigMap the manifest references but the test does not supply fails the
test, so a manifest that lacks a setting cannot pass by the test adding it.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]


def render(path: str) -> list[dict[str, Any]]:
    done = subprocess.run(["kubectl", "kustomize", str(ROOT / path)], capture_output=True, text=True)
    assert done.returncode == 0, f"kubectl kustomize {path}: {done.stderr}"
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: found {len(found)} in the render"
    return found[0]


def entrypoint(dockerfile: str) -> list[str]:
    """The exec-form ENTRYPOINT of one of the repository's Dockerfiles."""
    text = (ROOT / dockerfile).read_text()
    m = re.search(r"^ENTRYPOINT (\[.*\])$", text, re.M)
    assert m, f"{dockerfile} has no exec-form ENTRYPOINT"
    return yaml.safe_load(m.group(1))


class Kubelet:
    """Turns one rendered container into (argv, env) for subprocess, with the mappings above."""

    def __init__(
        self,
        objects: list[dict[str, Any]],
        secrets: dict[str, dict[str, str]],
        services: dict[str, str],
        mounts: dict[str, Path],
    ) -> None:
        self.objects, self.secrets, self.services, self.mounts = objects, secrets, services, mounts

    def _config_map(self, name: str) -> dict[str, str]:
        return {k: str(v) for k, v in find(self.objects, "ConfigMap", name).get("data", {}).items()}

    def _secret(self, name: str, optional: bool) -> dict[str, str]:
        if name not in self.secrets:
            assert optional, f"the manifest needs Secret {name!r}, which the runbook's step 5 must create"
            return {}
        return self.secrets[name]

    def env(self, container: dict[str, Any]) -> dict[str, str]:
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                env.update(self._config_map(source["configMapRef"]["name"]))
            else:
                ref = source["secretRef"]
                env.update(self._secret(ref["name"], ref.get("optional", False)))
        for item in container.get("env", []):
            if "value" in item:
                env[item["name"]] = expand(str(item["value"]), env)
                continue
            ref = item["valueFrom"]
            if "secretKeyRef" in ref:
                key = ref["secretKeyRef"]
                values = self._secret(key["name"], key.get("optional", False))
                assert key["key"] in values or key.get("optional"), (
                    f"env {item['name']}: Secret {key['name']!r} has no key {key['key']!r}"
                )
                if key["key"] in values:
                    env[item["name"]] = values[key["key"]]
            elif "configMapKeyRef" in ref:
                key = ref["configMapKeyRef"]
                env[item["name"]] = self._config_map(key["name"])[key["key"]]
            else:
                raise AssertionError(f"env {item['name']}: unsupported valueFrom {ref}")
        return {k: self.localize(v) for k, v in env.items()}

    def argv(
        self, container: dict[str, Any], env: dict[str, str], image_entrypoint: list[str] | None = None
    ) -> list[str]:
        command = container.get("command") or image_entrypoint
        assert command, f"container {container['name']}: no command and no image ENTRYPOINT given"
        return [self.localize(expand(str(a), env)) for a in [*command, *container.get("args", [])]]

    def localize(self, text: str) -> str:
        """Service DNS names -> the loopback stand-ins; mount paths -> their directories (one pass)."""
        table = {**self.services, **{m: str(d) for m, d in self.mounts.items()}}
        if not table:
            return text
        pattern = "|".join(
            re.escape(k) if k in self.services else rf"(?<![\w/.]){re.escape(k)}(?=/|\b|$)"
            for k in sorted(table, key=len, reverse=True)
        )
        return re.sub(pattern, lambda m: table[m.group(0)], text)


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: defined variables are replaced, $$ escapes, others stay as written."""
    return re.sub(
        r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
        lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)),
        text,
    )
