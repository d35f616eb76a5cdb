"""Commands to the elder's own device: "are you OK?" before paging, "help is coming" after.

They are best effort: the engine queues them inside the alert's transaction and sends them
after it commits; a failed send is logged, never raised, because the page is what must not fail.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.domain.registry import ElderSpec

Payload = dict[str, str | int | float]  # the JSON object published on the ``cmd`` topic


@dataclass(frozen=True, slots=True)
class Downlink:
    """A command for a device (``cmd`` topic), e.g. "are you OK?" or "help is coming"."""

    device_type: str
    device_id: str
    payload: Payload

    @property
    def topic(self) -> str:
        return f"eldercare/v1/{self.device_type}/{self.device_id}/cmd"


def elder_device(elder: ElderSpec) -> tuple[str, str] | None:
    """The device to ask or reassure the elder through: the band, else the pager."""
    for kind in ("wristband", "pager"):
        for device in elder.devices:
            if device.type == kind:
                return kind, device.id
    return None
