"""The pass/fail table: one row per scenario, then ``scenarios passed=<n> failed=<m>``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from simulators.scenario.timespec import format_duration

if TYPE_CHECKING:
    from simulators.scenario.runner import ScenarioResult

BRIEF_CHARS = 110


def _brief(result: ScenarioResult) -> str:
    if result.error:
        return result.error.splitlines()[0][:BRIEF_CHARS]
    failures = result.failures
    if not failures:
        return ""
    first = failures[0].brief()
    if len(first) > BRIEF_CHARS:
        first = first[: BRIEF_CHARS - 1] + "…"
    return first + (f" (+{len(failures) - 1} more)" if len(failures) > 1 else "")


def render_table(results: Sequence[ScenarioResult]) -> str:
    width = max([len(r.name) for r in results] + [8])
    lines = [f"{'SCENARIO':<{width}}  RESULT  TIME     SIM TIME  SPEED  EXPECT  FAILED"]
    for r in results:
        ok = sum(e.passed for e in r.expectations)
        lines.append(
            f"{r.name:<{width}}  {r.status.upper():<6}  {r.real_s:6.1f}s  {format_duration(r.scenario_s):>8}  "
            f"{r.speed:>4g}x  {ok:>3}/{len(r.expectations):<3} {_brief(r)}".rstrip()
        )
    passed = sum(r.passed for r in results)
    lines.append(f"scenarios passed={passed} failed={len(results) - passed}")
    return "\n".join(lines)


def render_failures(results: Sequence[ScenarioResult]) -> str:
    """Every failed expectation, error and note of every scenario that did not pass."""
    out: list[str] = []
    for r in results:
        if r.passed:
            continue
        out.append(f"{r.name} ({r.path}): {r.status.upper()}")
        if r.error:
            out.append(f"  error: {r.error}")
        for failure in r.failures:
            out.append(f"  {failure.brief()}")
        for note in r.notes:
            out.append(f"  note: {note}")
    return "\n".join(out)
