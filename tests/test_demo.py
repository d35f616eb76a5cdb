"""`make demo` must work: the scripted community run detects every scripted emergency."""

from __future__ import annotations

import asyncio

import pytest

from simulators.demo import run_demo

pytestmark = pytest.mark.slow


def test_demo_detects_every_scripted_emergency(capsys: pytest.CaptureFixture[str]) -> None:
    assert asyncio.run(run_demo()) == 0
    out = capsys.readouterr().out
    assert "scenarios passed=16 failed=0" in out.splitlines()[-1]  # 13 community checks, 3 YAML scenarios
    assert "/console/" in out and "log in as post / " in out
    assert "dead letters: 0" in out  # our own cmd downlinks are not read back as device input
    assert "紧急呼叫 SOS" in out and "跌倒后未起身" in out
    assert "SMS  → " in out and "CALL → " in out and "Reply 1" in out
