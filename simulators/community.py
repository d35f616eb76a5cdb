"""A small simulated community: elders around a post station, their devices and fences.

Used by the demo and by tests that want a realistic registry. Positions are around a
residential compound in Shanghai; names are common Chinese names so the messages
look like what responders will read.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

CENTRE = (31.2304, 121.4737)
SURNAMES = "王李张刘陈杨赵黄周吴徐孙胡朱高林何郭马罗"
GIVEN = [
    "秀英",
    "桂英",
    "建国",
    "淑珍",
    "玉兰",
    "国强",
    "凤英",
    "志明",
    "丽华",
    "德福",
    "秀兰",
    "春梅",
    "金凤",
    "振华",
    "美兰",
    "宝山",
    "桂兰",
    "永福",
    "素珍",
    "长林",
]


@dataclass(frozen=True, slots=True)
class SimElder:
    id: str
    name: str
    lat: float
    lon: float
    band: str
    pager: str | None
    glucose: str | None
    bp: str | None
    dementia: bool


def offset(lat: float, lon: float, east_m: float, north_m: float) -> tuple[float, float]:
    return (lat + north_m / 110_574, lon + east_m / (111_320 * math.cos(math.radians(lat))))


def build(n: int = 50, seed: int = 5) -> tuple[list[SimElder], dict[str, Any]]:
    """The elders and the registry document (``{"elders": [...]}``) for them."""
    rnd = random.Random(seed)
    elders: list[SimElder] = []
    docs: list[dict[str, Any]] = []
    for i in range(n):
        eid = f"e{i + 1:03d}"
        name = SURNAMES[i % len(SURNAMES)] + GIVEN[(i * 7) % len(GIVEN)]
        lat, lon = offset(*CENTRE, rnd.uniform(-600, 600), rnd.uniform(-600, 600))
        dementia = i % 7 == 3
        elder = SimElder(
            id=eid,
            name=name,
            lat=lat,
            lon=lon,
            band=f"wb-{eid}",
            pager=f"pg-{eid}" if i % 2 == 0 else None,
            glucose=f"gl-{eid}" if i % 3 == 0 else None,
            bp=f"bp-{eid}" if i % 4 == 0 else None,
            dementia=dementia,
        )
        elders.append(elder)
        devices = [{"id": elder.band, "type": "wristband", "reporting_interval_s": 5}]
        for dev, kind in ((elder.pager, "pager"), (elder.glucose, "glucose"), (elder.bp, "bp")):
            if dev:
                devices.append({"id": dev, "type": kind, "reporting_interval_s": 86_400})
        conditions = ["dementia"] if dementia else []
        if elder.glucose:
            conditions.append("diabetes")
        if elder.bp:
            conditions.append("hypertension")
        docs.append(
            {
                "id": eid,
                "name": name,
                "community": "幸福社区",
                "grid": f"网格{i % 3 + 1}",
                "address": f"幸福路{100 + i}号",
                "lives_alone": i % 2 == 1,
                "conditions": conditions,
                "home": {"lat": lat, "lon": lon},
                "contacts": _contacts(i, name),
                "fences": [
                    {
                        "id": "home",
                        "circle": {"lat": lat, "lon": lon, "radius_m": 150},
                        **({"severity": "critical"} if dementia else {}),
                    }
                ],
                "devices": devices,
            }
        )
    return elders, {"elders": docs, "responders": RESPONDERS}


CHILD_NAMES = ["强", "娜", "伟", "静", "磊", "敏"]
RESPONDERS: list[dict[str, Any]] = [
    {
        "id": "grid-1",
        "name": "王芳",
        "role": "grid_worker",
        "phone": "+8613900000001",
        "grid": "网格1",
        "community": "幸福社区",
    },
    {
        "id": "grid-2",
        "name": "赵刚",
        "role": "grid_worker",
        "phone": "+8613900000002",
        "grid": "网格2",
        "community": "幸福社区",
    },
    {
        "id": "grid-3",
        "name": "孙丽",
        "role": "grid_worker",
        "phone": "+8613900000003",
        "grid": "网格3",
        "community": "幸福社区",
    },
    {
        "id": "station",
        "name": "幸福社区养老驿站",
        "role": "post_station",
        "phone": "+8621000000001",
        "community": "幸福社区",
    },
    {"id": "hotline", "name": "24小时热线", "role": "hotline", "phone": "+8640000000001"},
]


def _contacts(i: int, name: str) -> list[dict[str, Any]]:
    """A child nearby (Chinese); every fifth elder also has one abroad who reads English."""
    contacts: list[dict[str, Any]] = [
        {
            "name": name[0] + CHILD_NAMES[i % len(CHILD_NAMES)],
            "phone": f"+86138{i:08d}",
            "relation": "child",
            "priority": 1,
        }
    ]
    if i % 5 == 0:
        contacts.append(
            {
                "name": f"Lily {name[0]}",
                "phone": f"+1415555{i:04d}",
                "relation": "grandchild",
                "language": "en",
                "priority": 2,
                "channels": ["sms"],
            }
        )
    return contacts
