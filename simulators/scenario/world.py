"""The world of a scenario: elders with homes, fences, devices and family; responders.

Turns the ``world`` section into the registry document the gateway imports and the
people and devices the runner plays. Generated elders (``generate``) are made here,
deterministically: the same file always gives the same world.
"""

from __future__ import annotations

import math
import random
import re
from typing import Any

import msgspec

from devices.contracts import DEVICE_ID_PATTERN
from gateway.alerting.roster import RosterError, check_roster
from gateway.domain.registry import RegistryError, registry_from_dicts
from simulators.community import GIVEN, SURNAMES
from simulators.scenario.errors import Locator, Path, ScenarioError
from simulators.scenario.model import AnswerIn, ContactIn, DeviceIn, ElderIn, FenceIn, GenerateIn, WorldIn
from simulators.scenario.plan import Answer, Device, Elder, Person, World
from simulators.scenario.timespec import SpecError, parse_duration

CENTRE = (31.2304, 121.4737)  # a residential compound in Shanghai (as simulators.community)
_E164 = re.compile(r"\+[1-9]\d{6,14}")
PREFIX = {"wristband": "wb", "pager": "pg", "glucose": "gl", "bp": "bp"}
DEFAULT_INTERVAL_S = {"wristband": 60, "pager": 86_400, "glucose": 86_400, "bp": 86_400}


def offset(lat: float, lon: float, east_m: float, north_m: float) -> tuple[float, float]:
    return (lat + north_m / 110_574, lon + east_m / (111_320 * math.cos(math.radians(lat))))


def _answer(spec: Any, where: Path, loc: Locator) -> Answer:
    if spec == "none":
        return Answer("none")
    if spec in ("busy", "pick_up"):
        return Answer(spec)
    assert isinstance(spec, AnswerIn)
    try:
        after = parse_duration(spec.after)
    except SpecError as error:
        raise loc.error((*where, "answers", "after"), str(error)) from None
    return Answer("respond", spec.by, spec.reply, after)


class _Builder:
    def __init__(self, world: WorldIn, loc: Locator) -> None:
        self.world = world
        self.loc = loc
        self.centre = (world.centre.lat, world.centre.lon) if world.centre else CENTRE
        self.elders: dict[str, Elder] = {}
        self.docs: list[dict[str, Any]] = []
        self.people: list[Person] = []
        self.device_ids: dict[str, Path] = {}

    def build(self) -> World:
        pattern = re.compile(DEVICE_ID_PATTERN)
        for i, elder in enumerate(self.world.elders):
            where: Path = ("world", "elders", i)
            if not pattern.match(elder.id):
                raise self.loc.error((*where, "id"), f"{elder.id!r}: use letters, digits, '-', '_' or '.'")
            if elder.id in self.elders:
                raise self.loc.error((*where, "id"), f"elder {elder.id!r} is listed twice")
            if elder.home is not None:
                home = (elder.home.lat, elder.home.lon)
            else:  # 400 m apart on a grid around the centre
                home = offset(*self.centre, (i % 5) * 400.0, (i // 5) * 400.0)
            self._elder(elder, home, where, None)
        gens = self.world.generate
        for g, gen in enumerate([gens] if isinstance(gens, GenerateIn) else gens or []):
            where = ("world", "generate") if isinstance(gens, GenerateIn) else ("world", "generate", g)
            self._generate(gen, where, g)
        responders = []
        for i, r in enumerate(self.world.responders):
            where = ("world", "responders", i)
            self._phone(r.phone, (*where, "phone"))
            doc = msgspec.to_builtins(r)
            doc.pop("answers")
            responders.append({k: v for k, v in doc.items() if v is not None})
            self.people.append(
                Person(f"responder:{r.id}", r.name, r.phone, r.role, _answer(r.answers, where, self.loc))
            )
        try:
            registry = registry_from_dicts(self.docs, responders)
            check_roster(registry, require_hotline=False)
        except (RegistryError, RosterError) as error:
            raise self._registry_error(str(error)) from None
        return World(self.elders, tuple(self.people), {"elders": self.docs, "responders": responders}, registry)

    def _phone(self, phone: str, where: Path) -> None:
        if not _E164.fullmatch(phone):
            raise self.loc.error(where, f'{phone!r} is not an E.164 phone number (e.g. "+8613800138000", quoted)')

    def _registry_error(self, text: str) -> ScenarioError:
        """Point a registry complaint ("... - at `$.elders[3].contacts[0].phone`" or
        "elder e1, fence home: ...") at the world entry it is about."""
        match = re.search(r"at `\$\.(elders|responders)\[(\d+)\]((?:\.\w+|\[\d+\])*)`", text)
        if match:
            section, index = match.group(1), int(match.group(2))
            rest = re.findall(r"\.(\w+)|\[(\d+)\]", match.group(3))
            path: Path = ("world", section, index, *(a or int(b) for a, b in rest))
            if section == "elders" and index >= len(self.world.elders):
                path = ("world", "generate")
            problem = text.split(" - at `")[0].removeprefix("registry: ")
            return self.loc.error(path, problem)
        match = re.search(r"elder (\S+?)[:,]", text)
        if match and match.group(1) in self.elders:
            ids = [e.id for e in self.world.elders]
            where: Path = (
                ("world", "elders", ids.index(match.group(1))) if match.group(1) in ids else ("world", "generate")
            )
            return self.loc.error(where, text)
        return self.loc.error(("world",), text)

    def _elder(self, elder: ElderIn, home: tuple[float, float], where: Path, n: int | None) -> None:
        devices = self._devices(elder.id, elder.devices, where)
        fences = [self._fence(f, home, (*where, "fences", i)) for i, f in enumerate(elder.fences)]
        contacts = []
        for i, c in enumerate(elder.contacts):
            contact = self._contact(c, n, (*where, "contacts", i))
            contacts.append(contact)
            self.people.append(
                Person(
                    f"contact:{elder.id}:{contact['phone']}",
                    contact["name"],
                    contact["phone"],
                    "family",
                    _answer(c.answers, (*where, "contacts", i), self.loc),
                    elder.id,
                )
            )
        name = elder.name or _chinese_name(len(self.elders))
        self.elders[elder.id] = Elder(elder.id, name, home[0], home[1], tuple(devices))
        self.docs.append(
            {
                "id": elder.id,
                "name": name,
                "community": elder.community,
                "grid": elder.grid,
                "address": elder.address or f"幸福路{100 + len(self.docs)}号",
                "lives_alone": elder.lives_alone,
                "conditions": list(elder.profile),
                "home": {"lat": home[0], "lon": home[1]},
                "thresholds": dict(elder.thresholds),
                "fences": fences,
                "language": elder.language,
                "devices": [{"id": d.id, "type": d.type, "reporting_interval_s": int(d.interval_s)} for d in devices],
                "contacts": contacts,
            }
        )

    def _contact(self, c: ContactIn, n: int | None, where: Path) -> dict[str, Any]:
        name, phone = c.name, c.phone
        if n is not None:
            name, phone = _fill(name, n, (*where, "name"), self.loc), _fill(phone, n, (*where, "phone"), self.loc)
        self._phone(phone, (*where, "phone"))
        return {
            "name": name,
            "phone": phone,
            "relation": c.relation,
            "language": c.language,
            "priority": c.priority,
            "channels": list(c.channels),
        }

    def _devices(self, elder_id: str, specs: list[Any], where: Path) -> list[Device]:
        out: list[Device] = []
        for i, spec in enumerate(specs):
            dwhere: Path = (*where, "devices", i)
            d = spec if isinstance(spec, DeviceIn) else DeviceIn(type=spec)
            device_id = d.id or f"{PREFIX[d.type]}-{elder_id}"
            if device_id in self.device_ids:
                raise self.loc.error(dwhere, f"device id {device_id!r} is used twice (give each an id)")
            self.device_ids[device_id] = dwhere
            try:
                interval = parse_duration(d.every) if d.every is not None else DEFAULT_INTERVAL_S[d.type]
            except SpecError as error:
                raise self.loc.error((*dwhere, "every"), str(error)) from None
            if not 1 <= interval <= 86_400:
                raise self.loc.error((*dwhere, "every"), "a reporting interval is 1 s to 1 day")
            reports = d.reports if d.reports is not None else d.type == "wristband"
            if reports and d.type not in ("wristband", "glucose", "bp"):
                raise self.loc.error((*dwhere, "reports"), f"a {d.type} sends no periodic telemetry")
            out.append(Device(device_id, d.type, elder_id, float(round(interval)), reports))
        return out

    def _fence(self, f: FenceIn, home: tuple[float, float], where: Path) -> dict[str, Any]:
        doc: dict[str, Any] = {"id": f.id}
        if f.geojson is not None:
            if f.radius_m is not None or f.centre is not None:
                raise self.loc.error(where, "give either geojson or radius_m (a circle), not both")
            doc["geojson"] = f.geojson
        else:
            lat, lon = (f.centre.lat, f.centre.lon) if f.centre else home
            doc["circle"] = {"lat": lat, "lon": lon, "radius_m": f.radius_m or 150.0}
        for key in ("active", "margin_m", "severity"):
            if getattr(f, key) is not None:
                doc[key] = getattr(f, key)
        return doc

    def _generate(self, gen: GenerateIn, where: Path, g: int) -> None:
        rnd = random.Random(1000 + g)
        for n in range(1, gen.count + 1):
            elder_id = _fill(gen.id, n, (*where, "id"), self.loc)
            if elder_id in self.elders:
                raise self.loc.error((*where, "id"), f"generated elder id {elder_id!r} is already used")
            radius = gen.spread_m * math.sqrt(rnd.random())
            angle = rnd.uniform(0, 2 * math.pi)
            home = offset(*self.centre, radius * math.cos(angle), radius * math.sin(angle))
            spec = ElderIn(
                id=elder_id,
                name=_fill(gen.name, n, (*where, "name"), self.loc) if gen.name else None,
                community=gen.community,
                grid=f"{gen.grid}{(n - 1) % gen.grids + 1}"
                if gen.grids
                else _fill(gen.grid, n, (*where, "grid"), self.loc),
                profile=gen.profile,
                lives_alone=gen.lives_alone,
                fences=gen.fences,
                devices=gen.devices,
                contacts=gen.contacts,
            )
            self._elder(spec, home, where, n)


def _fill(template: str, n: int, where: Path, loc: Locator) -> str:
    try:
        return template.format(n=n)
    except (KeyError, IndexError, ValueError) as error:
        raise loc.error(where, f"{template!r}: only {{n}} (1, 2, ...) can be filled in ({error})") from None


def _chinese_name(i: int) -> str:
    return SURNAMES[i % len(SURNAMES)] + GIVEN[(i * 7 + i // len(SURNAMES)) % len(GIVEN)]


def build_world(world: WorldIn, loc: Locator) -> World:
    return _Builder(world, loc).build()
