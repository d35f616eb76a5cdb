"""How an error is shown in a log line: its first line only (psycopg's carry SQL context after it)."""

from __future__ import annotations


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
