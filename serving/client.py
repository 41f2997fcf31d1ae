"""A small client for the predictor's V1 endpoint (`distilqa predict --url ...`)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from distilqa.errors import DistilqaError


def predict_url(url: str, name: str) -> str:
    """Accept a base URL (http://host:port) or a full :predict URL."""
    url = url.rstrip("/")
    return url if url.endswith(":predict") else f"{url}/v1/models/{name}:predict"


def ask(
    url: str,
    questions: list[dict[str, str]],
    name: str = "distilqa",
    parameters: dict[str, Any] | None = None,
    timeout: float = 60.0,
) -> dict[str, Any]:
    body: dict[str, Any] = {"instances": questions}
    if parameters:
        body["parameters"] = parameters
    target = predict_url(url, name)
    request = urllib.request.Request(
        target, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")
        try:
            detail = json.loads(detail).get("error", detail)
        except (ValueError, AttributeError):
            pass
        raise DistilqaError(f"{target}: HTTP {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, TimeoutError):
            raise DistilqaError(f"{target}: no answer within {timeout:g}s (timed out)") from None
        raise DistilqaError(f"{target}: cannot connect: {reason}") from None
