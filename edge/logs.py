"""Structured log lines on stdout (journald picks them up), with repeat suppression.

Lines are logfmt: ``level=warning logger=lemd.meter msg="read failed" reason=timeout``. A message
that repeats (same logger, level and template) is let through a few times per window and then
counted, not printed, until the window ends; the next line says how many were suppressed. A
flapping 4G link must not fill the eMMC or the journal.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Any

_RESERVED = set(vars(logging.makeLogRecord({})))


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields.update(
            {k: v for k, v in vars(record).items() if k not in _RESERVED and k != "message"}
        )
        if record.exc_info and record.exc_info[1] is not None:
            fields["error"] = f"{type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
        return " ".join(f"{key}={_quote(value)}" for key, value in fields.items())


def _quote(value: Any) -> str:
    text = str(value)
    if text and all(c.isalnum() or c in "-_./:@+" for c in text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


class RepeatFilter(logging.Filter):
    """Let each (logger, level, template) through ``burst`` times per ``window_s``, then count."""

    def __init__(
        self, burst: int = 5, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.burst = burst
        self.window_s = window_s
        self.clock = clock
        self._windows: dict[tuple[str, int, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, str(record.msg))
        now = self.clock()
        start, count = self._windows.get(key, (now, 0))
        if now - start >= self.window_s:
            suppressed = max(0, count - self.burst)
            if suppressed:
                record.suppressed = suppressed
            start, count = now, 0
        self._windows[key] = (start, count + 1)
        if len(self._windows) > 1024:  # bounded: forget the oldest windows
            for old in sorted(self._windows, key=lambda k: self._windows[k][0])[:256]:
                del self._windows[old]
        return count < self.burst


def setup_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(LogfmtFormatter())
    handler.addFilter(RepeatFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
