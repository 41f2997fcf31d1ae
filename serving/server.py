"""Start the predictor in kserve's ModelServer, bound where the user says.

kserve's REST server hard-codes host 0.0.0.0 and parses sys.argv when imported; a laptop or CI
run should listen on loopback only, and our own command-line flags are not kserve's. Both are
handled here, in one place.
"""

from __future__ import annotations

import html
import json
import sys
from pathlib import Path
from typing import Any

from distilqa.serving.settings import ServeSettings


def playground_html(name: str) -> str:
    """The playground page for model `name` (escaped for HTML and for JavaScript)."""
    template = (Path(__file__).parent / "playground.html").read_text(encoding="utf-8")
    return template.replace("__MODEL_TITLE__", html.escape(name)).replace(
        "__MODEL_JSON__", json.dumps(name).replace("<", "\\u003c")
    )


def add_playground(app: Any, name: str) -> None:
    """GET /playground: a question box, a context box, the answer highlighted in the context."""
    from fastapi.responses import HTMLResponse, RedirectResponse

    page = playground_html(name)
    app.add_api_route("/playground", lambda: HTMLResponse(page), methods=["GET"], include_in_schema=False)
    app.add_api_route("/playground/", lambda: RedirectResponse("/playground"), methods=["GET"], include_in_schema=False)


def serve(
    model_location: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    name: str = "distilqa",
    settings: ServeSettings | None = None,
) -> None:
    argv, sys.argv = sys.argv, sys.argv[:1]  # kserve parses sys.argv at import time
    try:
        import kserve
        from kserve import model_server
    finally:
        sys.argv = argv

    class HostRESTServer(model_server.RESTServer):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.config.host = host

    model_server.RESTServer = HostRESTServer
    add_playground(model_server.app, name)
    from distilqa.serving.predictor import QAPredictor

    predictor = QAPredictor(name, model_location, settings)
    predictor.load()
    print(
        f"distilqa serve: model {name!r} ready on http://{host}:{port} (playground: http://{host}:{port}/playground)",
        file=sys.stderr,
        flush=True,
    )
    kserve.ModelServer(http_port=port, enable_grpc=False, workers=1).start([predictor])
