"""Progress bars on stderr for every long-running step (stdout stays clean for results)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

ProgressFactory = Callable[[int], Any]


def progress_bar(description: str, unit: str = "it", shown: bool = True) -> ProgressFactory:
    """A factory: given a total, it returns a tqdm bar with .update(n) and .close().

    `shown=False` gives a silent bar (ranks other than 0 of a multi-process stage)."""

    def factory(total: int) -> Any:
        from tqdm import tqdm

        options = {"file": sys.stderr, "dynamic_ncols": True, "mininterval": 0.5, "disable": not shown}
        return tqdm(total=total, desc=description, unit=unit, **options)

    return factory


def progress_iter(iterable: Any, description: str, unit: str = "it", shown: bool = True) -> Any:
    """Wrap an iterable of unknown length: a running count with a rate (`shown=False`: silent)."""
    from tqdm import tqdm

    options = {"file": sys.stderr, "dynamic_ncols": True, "mininterval": 0.5, "disable": not shown}
    return tqdm(iterable, desc=description, unit=unit, **options)
