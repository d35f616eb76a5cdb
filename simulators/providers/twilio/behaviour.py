"""How the fake behaves: injected failures, how calls are answered and messages delivered."""

from __future__ import annotations

import time

from simulators.providers.twilio.records import Api, CallOutcome, DeliveryOutcome, FailureMode
from simulators.providers.twilio.state import FakeState


class Behaviour(FakeState):
    """How the fake behaves: injected failures, how calls are answered and messages delivered."""

    def fail_next(self, n: int, mode: FailureMode, *, api: Api | None = None) -> None:
        """The next ``n`` authenticated requests (to ``api``, or to either) fail with ``mode``."""
        with self._lock:
            self._fail_next.extend([(mode, api)] * n)

    def fail_for(self, seconds: float, mode: FailureMode, *, api: Api | None = None) -> None:
        """Every authenticated request for the next ``seconds`` fails with ``mode``."""
        with self._lock:
            self._fail_window = (time.monotonic() + seconds, mode, api)

    def fail_number(self, phone: str, mode: FailureMode) -> None:
        """Every request to ``phone`` fails with ``mode`` until ``clear_failures()``."""
        with self._lock:
            self._fail_numbers[phone] = mode

    def clear_failures(self) -> None:
        with self._lock:
            self._fail_next.clear()
            self._fail_window = None
            self._fail_numbers.clear()

    def answer_as(self, phone: str, outcome: CallOutcome, *, press: str | None = None) -> None:
        """How calls to ``phone`` go from now on (default: "answered", no key pressed).
        ``press``: an answered call presses these digits by itself one step after answering."""
        with self._lock:
            self._answers[phone] = (outcome, press)

    def deliver_as(self, phone: str, outcome: DeliveryOutcome, error_code: int | None = None) -> None:
        """How messages to ``phone`` end (default "delivered"); undelivered/failed carry
        ``error_code`` (default 30003 / 30008)."""
        with self._lock:
            self._deliveries[phone] = (outcome, error_code if outcome != "delivered" else None)

    def _take_failure(self, api: Api, to: str) -> FailureMode | None:
        with self._lock:
            if to in self._fail_numbers:
                return self._fail_numbers[to]
            for i, (mode, only) in enumerate(self._fail_next):
                if only in (None, api):
                    del self._fail_next[i]
                    return mode
            window = self._fail_window
            if window is not None and time.monotonic() < window[0] and window[2] in (None, api):
                return window[1]
            return None
