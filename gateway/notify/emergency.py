"""Paging without the database: critical detections while PostgreSQL is away.

The normal path (alerts, timers, outbox) lives in the database. When it is
unreachable, readings are spooled and replayed later, but an SOS must not wait for
that: a critical detection is paged at once to the people of its policy's first
tiers, resolved from the registry held in memory, through the same notifiers and
templates. When the database returns, the spooled detection becomes an alert as
usual and escalation carries on from there (so these people may hear twice: a repeat,
never a silence).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from gateway.alerting.lifecycle import alert_kind
from gateway.alerting.policy import EscalationConfig, select_policy
from gateway.alerting.roster import resolve_role
from gateway.domain.detection import Detection
from gateway.domain.registry import ElderSpec, RegistryFile
from gateway.notify.base import Notifier, NotifyError, Outbound, redact_phone
from gateway.notify.templates import MessageContext, render_sms, render_voice_twiml

log = logging.getLogger(__name__)


class EmergencyPager:
    def __init__(
        self,
        notifiers: Callable[[], Sequence[Notifier]],
        escalation: EscalationConfig,
        registry: RegistryFile,
        clock_ms: Callable[[], int],
        public_base_url: str,
    ) -> None:
        self.notifiers = notifiers  # the outbox's, read when needed (they are built on first use)
        self.escalation = escalation
        self.elders: dict[str, ElderSpec] = {e.id: e for e in registry.elders}
        self.registry = registry
        self.clock_ms = clock_ms
        self.public = public_base_url.rstrip("/")
        self.sent = 0

    def use_registry(self, registry: RegistryFile) -> None:
        self.registry = registry
        self.elders = {e.id: e for e in registry.elders}

    def wanted(self, det: Detection) -> bool:
        return det.severity == "critical" and not det.cleared and det.elder_id in self.elders

    async def page(self, det: Detection) -> int:
        """Send the first tiers' pages for ``det`` now; return how many were accepted."""
        elder = self.elders[det.elder_id or ""]
        kind = alert_kind(det.kind)
        policy = select_policy(self.escalation, kind, det.severity)
        now = self.clock_ms()
        at = datetime.fromtimestamp(now / 1000, UTC).astimezone(self.escalation.zone)
        ctx_base = dict(
            elder_name=elder.name,
            kind=kind,
            severity=det.severity,
            when_ms=det.ts_ms,
            alert_code="-",
            address=elder.address,
            evidence=det.evidence,
            lat=elder.home.lat if elder.home else None,
            lon=elder.home.lon if elder.home else None,
        )
        accepted = 0
        for tier in policy.tiers[: policy.start_tiers]:
            for role, channels in tier.roles.items():
                for person in resolve_role(role, elder, self.registry, at, tz=self.escalation.zone):
                    china = person.phone.startswith("+86")
                    ctx = MessageContext(
                        **ctx_base,  # type: ignore[arg-type]
                        role=person.role,
                        recipient_language=person.language,
                    )
                    for channel in [c for c in channels if c in person.channels] or list(person.channels[:1]):
                        message = Outbound(
                            notification_id=0,
                            alert_id=0,
                            purpose="page",
                            channel=channel,
                            phone=person.phone,
                            language=person.language,
                            recipient_name=person.name,
                            text=render_sms(ctx, "page", replies_supported=False, links_allowed=not china),
                            twiml=render_voice_twiml(ctx, f"{self.public}/twilio/voice/gather/0")
                            if channel == "voice"
                            else None,
                        )
                        accepted += await self._send(message)
        self.sent += accepted
        log.warning("database unavailable: paged %d directly for %s of elder %s", accepted, kind, elder.id)
        return accepted

    async def _send(self, message: Outbound) -> int:
        for notifier in [n for n in self.notifiers() if message.channel in n.channels]:
            try:
                await notifier.send(message)
                return 1
            except NotifyError as error:
                log.warning(
                    "emergency %s to %s via %s failed: %s",
                    message.channel,
                    redact_phone(message.phone),
                    notifier.name,
                    error,
                )
        return 0
