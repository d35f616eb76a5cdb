"""Durations, time windows and count ranges as scenario files write them.

* duration: ``90s``, ``2m``, ``1m30s``, ``1h``, ``500ms``, or a plain number of seconds;
* window (when something must happen, in scenario time since ``since`` or the start):
  ``90s ± 30s`` (also ``90s +- 30s``), ``within 2m`` (0 to 2 min), ``60s..2m``,
  ``after 5m`` (5 min or later), ``at 90s`` (exactly, as far as the clock's resolution goes);
* count range: ``3``, ``2..4``, ``>= 1``, ``<= 2``, ``> 0``, ``< 5``.

Each parser raises :class:`SpecError` with a message that says what was expected; the
loader adds the file, line and key.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|min|s|m|h)")
_DURATION_HINT = "a duration like 90s, 2m, 1m30s, 1h, 500ms or a number of seconds"


class SpecError(ValueError):
    """A duration, window or range that cannot be read; the message says what is expected."""


def parse_duration(value: object) -> float:
    """Seconds in ``value``; never negative."""
    if isinstance(value, bool):
        raise SpecError(f"{value!r} is not {_DURATION_HINT}")
    if isinstance(value, int | float):
        if value < 0 or not math.isfinite(value):
            raise SpecError(f"{value!r} is not {_DURATION_HINT} (>= 0)")
        return float(value)
    if not isinstance(value, str):
        raise SpecError(f"{value!r} is not {_DURATION_HINT}")
    text = value.strip().replace(" ", "")
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    pos, total = 0, 0.0
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_S[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise SpecError(f"{value!r} is not {_DURATION_HINT}")
    return total


def format_duration(seconds: float) -> str:
    """``75`` -> ``1m15s``; whole seconds unless below 10 s."""
    if seconds < 0:
        return "-" + format_duration(-seconds)
    if seconds < 10 and seconds != int(seconds):
        return f"{seconds:.1f}s"
    s = round(seconds)
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    if h:
        return f"{h}h{m:02d}m{sec:02d}s"
    if m:
        return f"{m}m{sec:02d}s" if sec else f"{m}m"
    return f"{sec}s"


@dataclass(frozen=True, slots=True)
class Window:
    """From ``lo`` to ``hi`` seconds after the reference moment (``hi`` may be infinite)."""

    lo: float
    hi: float
    text: str

    def shifted(self, by_s: float) -> Window:
        return Window(self.lo + by_s, self.hi + by_s, self.text)

    def describe(self) -> str:
        if self.hi == math.inf:
            return f"after {format_duration(self.lo)}"
        if self.lo == 0:
            return f"within {format_duration(self.hi)}"
        return f"{format_duration(self.lo)}..{format_duration(self.hi)}"


ANY_TIME = Window(0.0, math.inf, "any time")
_WINDOW_HINT = "a window like '90s ± 30s', 'within 2m', '60s..2m', 'after 5m' or 'at 90s'"


def parse_window(value: object) -> Window:
    if not isinstance(value, str):
        if isinstance(value, int | float) and not isinstance(value, bool):
            raise SpecError(f"{value!r} is not {_WINDOW_HINT} (a bare number is ambiguous)")
        raise SpecError(f"{value!r} is not {_WINDOW_HINT}")
    text = value.strip()
    try:
        for sep in ("±", "+-", "+/-"):
            if sep in text:
                centre, spread = (parse_duration(p) for p in text.split(sep, 1))
                return Window(max(0.0, centre - spread), centre + spread, text)
        lowered = text.lower()
        if lowered.startswith(("within ", "by ")):
            return Window(0.0, parse_duration(text.split(None, 1)[1]), text)
        if lowered.startswith("after "):
            return Window(parse_duration(text.split(None, 1)[1]), math.inf, text)
        if lowered.startswith("at "):
            at = parse_duration(text.split(None, 1)[1])
            return Window(at, at, text)
        if ".." in text:
            lo_text, hi_text = text.split("..", 1)
            lo, hi = parse_duration(lo_text), parse_duration(hi_text)
            if hi < lo:
                raise SpecError(f"{value!r}: the window ends before it starts")
            return Window(lo, hi, text)
    except SpecError as error:
        if "ends before" in str(error):
            raise
        raise SpecError(f"{value!r} is not {_WINDOW_HINT}") from None
    raise SpecError(f"{value!r} is not {_WINDOW_HINT}")


@dataclass(frozen=True, slots=True)
class CountRange:
    lo: int
    hi: float  # math.inf when unbounded
    text: str

    def holds(self, n: int) -> bool:
        return self.lo <= n <= self.hi

    def describe(self) -> str:
        if self.hi == math.inf:
            return f">= {self.lo}"
        if self.lo == self.hi:
            return f"{self.lo}"
        return f"{self.lo}..{int(self.hi)}"


AT_LEAST_ONE = CountRange(1, math.inf, ">= 1")
_RANGE_HINT = "a count like 3, '2..4', '>= 1' or '<= 2'"


def parse_range(value: object) -> CountRange:
    if isinstance(value, bool):
        raise SpecError(f"{value!r} is not {_RANGE_HINT}")
    if isinstance(value, int):
        if value < 0:
            raise SpecError(f"{value!r} is not {_RANGE_HINT} (>= 0)")
        return CountRange(value, value, str(value))
    if not isinstance(value, str):
        raise SpecError(f"{value!r} is not {_RANGE_HINT}")
    text = value.strip()
    match = re.fullmatch(r"(>=|<=|>|<)?\s*(\d+)", text)
    if match:
        op, n = match.group(1), int(match.group(2))
        if op is None:
            return CountRange(n, n, text)
        if op == ">=":
            return CountRange(n, math.inf, text)
        if op == ">":
            return CountRange(n + 1, math.inf, text)
        if op == "<=":
            return CountRange(0, n, text)
        if n == 0:
            raise SpecError(f"{value!r}: no count is below 0")
        return CountRange(0, n - 1, text)
    match = re.fullmatch(r"(\d+)\s*\.\.\s*(\d+)", text)
    if match:
        lo, hi = int(match.group(1)), int(match.group(2))
        if hi < lo:
            raise SpecError(f"{value!r}: the range ends before it starts")
        return CountRange(lo, hi, text)
    raise SpecError(f"{value!r} is not {_RANGE_HINT}")
