"""Log lines that say which session they are about, when a process serves several."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any


class _Labelled(logging.LoggerAdapter):  # type: ignore[type-arg]
    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        return f"[{self.extra['label']}] {msg}", kwargs  # type: ignore[index]


def labelled(log: logging.Logger, label: str) -> logging.Logger | logging.LoggerAdapter:  # type: ignore[type-arg]
    """log itself without a label; with one, every line starts with "[label] "."""
    return _Labelled(log, {"label": label}) if label else log
