"""The people in a scenario, played through the fake Twilio: they pick up or not, press a key
on the call or text back, after a delay in scenario time.

Each person is told to the fake once (``answer_as``): ``none`` lets calls ring out,
``busy`` refuses them, ``pick_up`` and ``respond`` (by key) pick up. A responding person answers each alert
once: on its first page (a call, for ``by: key``) they wait ``after`` scenario seconds
and press ``reply`` on that call, or text ``reply`` back.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import re
from collections.abc import Callable, Coroutine
from typing import Any

from simulators.providers.twilio.records import FakeTwilioError
from simulators.providers.twilio.server import FakeTwilio
from simulators.scenario.clock import ScenarioClock
from simulators.scenario.observe import Observed
from simulators.scenario.plan import Person, World

_NOTIFICATION = re.compile(r"/twilio/status/(\d+)$")
Narrate = Callable[[str], None]


class People:
    def __init__(
        self, world: World, fake: FakeTwilio, clock: ScenarioClock, sms_from: str, sms_url: str, narrate: Narrate
    ) -> None:
        self.fake = fake
        self.clock = clock
        self.sms_from = sms_from
        self.sms_url = sms_url
        self.narrate = narrate
        self.by_phone: dict[str, Person] = {}
        for person in world.people:
            self.by_phone.setdefault(person.phone, person)
        self._seen_calls = 0
        self._seen_messages = 0
        self._unplaced: list[tuple[str, str, int, float, str | None]] = []  # (kind, phone, nid, at_s, call sid)
        self._answered: set[tuple[str, int]] = set()
        self._queue: list[tuple[float, int, str, Callable[[], Coroutine[Any, Any, None]]]] = []
        self._seq = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.notes: list[str] = []

    def configure(self) -> None:
        for phone, person in self.by_phone.items():
            mode = person.answer.mode
            if mode == "none" or (mode == "respond" and person.answer.by == "sms"):
                self.fake.answer_as(phone, "no-answer")
            elif mode == "busy":
                self.fake.answer_as(phone, "busy")
            else:
                self.fake.answer_as(phone, "answered")

    def _later(self, at_s: float, what: str, act: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (at_s, self._seq, what, act))

    def notice(self, obs: Observed) -> None:
        """New pages that arrived at the fake: schedule the answers of people who answer."""
        calls, messages = self.fake.calls, self.fake.messages
        for c in calls[self._seen_calls :]:
            match = _NOTIFICATION.search(c.status_callback or "")
            if c.accepted and match and c.to in self.by_phone:
                self._unplaced.append(
                    ("call", c.to, int(match.group(1)), self.clock.at_monotonic(c.received_monotonic), c.sid)
                )
        for m in messages[self._seen_messages :]:
            match = _NOTIFICATION.search(m.status_callback or "")
            if m.accepted and match and m.to in self.by_phone:
                self._unplaced.append(
                    ("sms", m.to, int(match.group(1)), self.clock.at_monotonic(m.received_monotonic), None)
                )
        self._seen_calls, self._seen_messages = len(calls), len(messages)
        rows = {n.id: n for n in obs.notifications}
        waiting = []
        for item in self._unplaced:
            kind, phone, nid, at_s, sid = item
            row = rows.get(nid)
            if row is None:
                waiting.append(item)  # the snapshot predates this page; look again next time
                continue
            person = self.by_phone[phone]
            answer = person.answer
            if row.purpose != "page" or answer.mode != "respond" or (phone, row.alert_id) in self._answered:
                continue
            if answer.by == "key" and kind != "call":
                continue
            self._answered.add((phone, row.alert_id))
            code = f"A{row.alert_id}"
            if answer.by == "key":
                assert sid is not None
                self._later(
                    at_s + answer.after_s,
                    f"{person.name} presses {answer.reply} on the call about {code}",
                    self._press(person, sid, answer.reply),
                )
            else:
                self._later(
                    at_s + answer.after_s,
                    f"{person.name} texts {answer.reply!r} back about {code}",
                    self._text(person, answer.reply),
                )
        self._unplaced = waiting

    def due(self, now_s: float) -> int:
        """Start the answers due by ``now_s``; return how many."""
        n = 0
        while self._queue and self._queue[0][0] <= now_s:
            _, _, what, act = heapq.heappop(self._queue)
            self.narrate(f"responder: {what}")
            self._spawn(act())
            n += 1
        return n

    def next_due_s(self) -> float:
        return self._queue[0][0] if self._queue else math.inf

    @property
    def unseen(self) -> bool:
        """Pages have reached the fake that :meth:`notice` has not looked at yet."""
        return (
            bool(self._unplaced)
            or len(self.fake.calls) > self._seen_calls
            or len(self.fake.messages) > self._seen_messages
        )

    @property
    def busy(self) -> bool:
        """An answer is on its way to the gateway (its webhook has not been answered yet)."""
        return bool(self.tasks)

    def press_latest(self, phone: str, digits: str) -> None:
        """A timeline ``press``: the person presses keys on the latest call they got."""
        person = self.by_phone[phone]
        call = next((c for c in reversed(self.fake.calls) if c.to == phone and c.accepted and c.sid), None)
        if call is None or call.sid is None:
            self.notes.append(f"{person.name} had no call to press {digits} on")
            return
        self._spawn(self._press(person, call.sid, digits)())

    def text(self, phone: str, body: str) -> None:
        self._spawn(self._text(self.by_phone[phone], body)())

    def _press(self, person: Person, call_sid: str, digits: str) -> Callable[[], Coroutine[Any, Any, None]]:
        async def act() -> None:
            try:
                delivery = await self.fake.press_key(call_sid, digits)
            except FakeTwilioError as error:
                self.notes.append(f"{person.name} could not press {digits}: {error}")
                self.narrate(f"responder: {person.name} could not press {digits}: {error}")
                return
            if delivery.status != 200:
                self.notes.append(f"the gateway answered {person.name}'s key press with HTTP {delivery.status}")

        return act

    def _text(self, person: Person, body: str) -> Callable[[], Coroutine[Any, Any, None]]:
        async def act() -> None:
            delivery = await self.fake.reply_sms(person.phone, self.sms_from, body, self.sms_url)
            if delivery.status != 200:
                self.notes.append(f"the gateway answered {person.name}'s SMS with HTTP {delivery.status}")

        return act

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro, name="scenario-person")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
