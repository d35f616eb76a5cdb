"""Errors of the scenario package.

* :class:`ScenarioError` — a scenario file is invalid. The message is one line that
  names the file, the line and the key (``falls.yaml:14: timeline[2].walk.to: ...``).
  Raised by :func:`~simulators.scenario.loader.load_scenario`; nothing runs.
* :class:`ScenarioRunError` — a valid scenario could not be played (a service would
  not start, the gateway failed). Reported as an ERROR row, never as a pass.
"""

from __future__ import annotations

from collections.abc import Sequence

Path = tuple[str | int, ...]


class ScenarioError(ValueError):
    """A scenario file is invalid; ``file``, ``line`` and ``key`` say where."""

    def __init__(self, file: str, line: int | None, key: str, problem: str) -> None:
        self.file, self.line, self.key, self.problem = file, line, key, problem
        where = f"{file}:{line}" if line else file
        super().__init__(f"{where}: {key}: {problem}" if key else f"{where}: {problem}")


class ScenarioRunError(RuntimeError):
    """A scenario could not be played to the end (not a failed expectation)."""


def dotted(path: Sequence[str | int]) -> str:
    """``("timeline", 2, "walk")`` -> ``timeline[2].walk``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class Locator:
    """Lines of the keys of one YAML file, to name where a problem is."""

    def __init__(self, file: str, lines: dict[Path, int]) -> None:
        self.file = file
        self.lines = lines

    def line(self, path: Path) -> int | None:
        """The line of ``path``, else of its nearest enclosing key."""
        for n in range(len(path), -1, -1):
            found = self.lines.get(tuple(path[:n]))
            if found is not None:
                return found
        return None

    def error(self, path: Path, problem: str) -> ScenarioError:
        return ScenarioError(self.file, self.line(path), dotted(path), problem)
