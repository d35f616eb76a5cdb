"""Notifiers and outbox settings from the configuration."""

from __future__ import annotations

import logging

from gateway.config import GatewayConfig, china_secrets, twilio_token, webhook_secret
from gateway.notify.base import Notifier
from gateway.notify.outbox import OutboxSettings
from gateway.notify.webhook import ConsoleNotifier, SignedWebhook

log = logging.getLogger(__name__)


def import_providers(config: GatewayConfig) -> None:
    """Import the configured providers' clients now, ahead of ``build_notifiers``."""
    n = config.notify
    if n.twilio is not None:
        import gateway.notify.twilio_sms
        import gateway.notify.twilio_voice
    if n.aliyun is not None:
        import gateway.notify.aliyun
    if n.tencent is not None:
        import gateway.notify.tencent  # noqa: F401


def build_notifiers(config: GatewayConfig) -> list[Notifier]:
    n = config.notify
    notifiers: list[Notifier] = []
    # the providers' SDKs are imported only where they are configured: China's cost ~0.3 s and
    # ~20 MB, Twilio's (with aiohttp and requests) ~0.15 s of a restart (issue 19)
    if n.twilio is not None:
        from gateway.notify.twilio_client import TwilioSettings
        from gateway.notify.twilio_sms import TwilioSms
        from gateway.notify.twilio_voice import TwilioVoice

        settings = TwilioSettings(
            n.twilio.account_sid,
            twilio_token(config),
            n.twilio.sms_from,
            n.twilio.voice_from,
            n.twilio.base_url,
            n.twilio.timeout_s,
        )
        notifiers += [TwilioSms(settings), TwilioVoice(settings)]
    if n.aliyun is not None:
        from gateway.notify.aliyun import AliyunSms, AliyunVoice

        secret = china_secrets(config, "aliyun")[0]
        notifiers.append(AliyunSms(n.aliyun, secret))
        if n.aliyun.called_show_number:
            notifiers.append(AliyunVoice(n.aliyun, secret))
    if n.tencent is not None:
        from gateway.notify.tencent import TencentSms, TencentVoice

        secret = china_secrets(config, "tencent")[0]
        notifiers.append(TencentSms(n.tencent, secret))
        if n.tencent.voice_app_id:
            notifiers.append(TencentVoice(n.tencent, secret))
    if n.webhook is not None:
        notifiers.append(SignedWebhook(n.webhook.url, webhook_secret(config)))
    if n.console or not notifiers:
        if not n.console:
            log.warning(
                "no SMS/voice provider configured (notify.twilio, notify.aliyun, notify.tencent): "
                "notifications are only logged"
            )
        notifiers.append(ConsoleNotifier())
    return notifiers


def outbox_settings(config: GatewayConfig) -> OutboxSettings:
    n = config.notify
    return OutboxSettings(
        public_base_url=n.public_base_url,
        max_attempts=n.max_attempts,
        backoff_initial_s=n.backoff_initial_s,
        backoff_max_s=n.backoff_max_s,
        lease_s=n.lease_s,
        calls_per_hour=n.calls_per_hour,
        keep_trying_s=n.keep_trying_s,
        china_order=tuple(n.china_order),
    )
