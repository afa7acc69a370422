"""Structured log lines, and repeated errors suppressed instead of flooding the journal."""

from __future__ import annotations

import logging

from edge.logs import LogfmtFormatter, RepeatFilter


def record(msg: str, **extra: object) -> logging.LogRecord:
    rec = logging.makeLogRecord(
        {
            "name": "lemd.meter",
            "levelno": logging.WARNING,
            "levelname": "WARNING",
            "msg": msg,
            "args": (),
        }
    )
    rec.__dict__.update(extra)
    return rec


def test_logfmt_line_has_fields_and_quotes_spaces() -> None:
    """Extra fields appear as key=value; values with spaces are quoted."""
    line = LogfmtFormatter().format(record("read failed", reason="bcc mismatch", attempt=2))
    assert (
        line == 'level=warning logger=lemd.meter msg="read failed" reason="bcc mismatch" attempt=2'
    )


def test_repeats_are_suppressed_then_counted() -> None:
    """After the burst, a repeating line is dropped and the next window reports the count."""
    now = [0.0]
    filt = RepeatFilter(burst=3, window_s=60, clock=lambda: now[0])
    passed = [filt.filter(record("broker unreachable")) for _ in range(10)]
    assert passed == [True] * 3 + [False] * 7
    now[0] = 61.0
    rec = record("broker unreachable")
    assert filt.filter(rec)
    assert rec.suppressed == 7
    assert filt.filter(record("a different message"))
