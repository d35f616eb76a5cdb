"""Aliyun SMS (dysmsapi ``SendSms``) and voice (dyvmsapi ``IvrCall``) through the official SDKs.

Aliyun sends only registered templates (``notify.aliyun.sms_templates``), signed with a
registered signature (签名). The call is an interactive one (IvrCall): it plays the
``page`` voice template and takes one key; 1 plays ``key1`` (taken), 2 plays ``key2``
(passed on). The pressed key comes back in the ``VoiceCallReport`` receipt, the call's
end in ``VoiceReport`` (``gateway.notify.china_callbacks``). Both requests carry the
notification id as ``OutId``, which every receipt echoes.

Errors: an HTTP failure is classified by status (``classify_http``); a refusal in the
body (``Code`` other than ``OK``) is permanent for ``isv.*`` (number, template,
signature, limits: another try changes nothing) and retryable for ``isp.*`` (Aliyun's
own trouble). Either way the outbox tries the next provider for that person at once.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from alibabacloud_dysmsapi20170525 import models as sms_models
from alibabacloud_dysmsapi20170525.client import Client as SmsClient
from alibabacloud_dyvmsapi20170525 import models as vms_models
from alibabacloud_dyvmsapi20170525.client import Client as VmsClient
from alibabacloud_tea_openapi.exceptions import AlibabaCloudException
from alibabacloud_tea_openapi.models import Config

from gateway.config import AliyunConfig
from gateway.notify.base import Outbound, PermanentError, RetryableError, Sent, classify_http
from gateway.notify.template_fields import named_params, pick

SMS_ENDPOINT = "dysmsapi.aliyuncs.com"
VOICE_ENDPOINT = "dyvmsapi.aliyuncs.com"
KEY_TIMEOUT_MS = 20_000  # how long the call waits for a key after the message
PLAY_TIMES = 2


def domestic_number(phone: str) -> str:
    """Aliyun's domestic form: a mobile's 11 digits (+8613800000001 -> 13800000001), a
    landline with its area code's 0 (+862100000001 -> 02100000001; voice only)."""
    if not phone.startswith("+86"):
        raise PermanentError("Aliyun is used for +86 numbers only")
    number = phone[3:]
    return number if number.startswith("1") else "0" + number


class AliyunChannel:
    """What SMS and voice share: a client, a time limit, Aliyun's errors as ours."""

    name = "aliyun"

    def __init__(self, config: AliyunConfig, secret: str, default_endpoint: str) -> None:
        self.config = config
        self._options = Config(
            access_key_id=config.access_key_id,
            access_key_secret=secret,
            endpoint=config.endpoint or default_endpoint,
            protocol=config.protocol,
            region_id=config.region,
            read_timeout=int(config.timeout_s * 1000),
            connect_timeout=int(min(config.timeout_s, 5) * 1000),
        )

    def __repr__(self) -> str:  # the secret never reaches a log line
        return f"{type(self).__name__}(endpoint={self._options.endpoint!r})"

    async def guarded(self, request: Any) -> Any:
        """The response body, or our error; never longer than the time limit."""
        try:
            async with asyncio.timeout(self.config.timeout_s + 2):
                response = await request
        except asyncio.CancelledError:
            raise
        except AlibabaCloudException as error:
            raise classify_http(error.status_code, error.code, f"aliyun {error.status_code} {error.code}") from None
        except TimeoutError:
            raise RetryableError("aliyun request timed out") from None
        except Exception as error:  # the SDK's transport raises its own kinds
            raise RetryableError(f"aliyun request failed: {type(error).__name__}: {error}") from None
        body = response.body
        if body is None or body.code != "OK":
            code = getattr(body, "code", None) or "no body"
            message = f"aliyun refused: {code} {getattr(body, 'message', '') or ''}".strip()
            raise (RetryableError if str(code).startswith("isp.") else PermanentError)(message, code=code)
        return body

    async def close(self) -> None:
        """The SDK opens a connection per request; nothing is held."""


class AliyunSms(AliyunChannel):
    channels = frozenset({"sms"})

    def __init__(self, config: AliyunConfig, secret: str) -> None:
        super().__init__(config, secret, SMS_ENDPOINT)
        self.client = SmsClient(self._options)

    async def send(self, message: Outbound) -> Sent:
        purpose = "summary" if message.summary else message.purpose
        template = pick(self.config.sms_templates, purpose, message.kind)
        request = sms_models.SendSmsRequest(
            phone_numbers=domestic_number(message.phone),
            sign_name=self.config.sign_name,
            template_code=template.template,
            template_param=json.dumps(named_params(template, message.fields), ensure_ascii=False),
            out_id=str(message.notification_id),
        )
        body = await self.guarded(self.client.send_sms_async(request))
        return Sent(str(body.biz_id), self.name)


class AliyunVoice(AliyunChannel):
    channels = frozenset({"voice"})

    def __init__(self, config: AliyunConfig, secret: str) -> None:
        super().__init__(config, secret, VOICE_ENDPOINT)
        self.client = VmsClient(self._options)

    async def send(self, message: Outbound) -> Sent:
        if not self.config.called_show_number:
            raise PermanentError("notify.aliyun.called_show_number is not set: no voice through Aliyun")
        templates = self.config.voice_templates
        start = pick(templates, "page", message.kind)
        menu = [
            vms_models.IvrCallRequestMenuKeyMap(
                key=key[-1],
                code=templates[key].template,
                tts_params=json.dumps(named_params(templates[key], message.fields), ensure_ascii=False),
            )
            for key in ("key1", "key2")
            if key in templates
        ]
        request = vms_models.IvrCallRequest(
            called_number=domestic_number(message.phone),
            called_show_number=self.config.called_show_number,
            start_code=start.template,
            start_tts_params=json.dumps(named_params(start, message.fields), ensure_ascii=False),
            menu_key_map=menu or None,
            play_times=PLAY_TIMES,
            timeout=KEY_TIMEOUT_MS,
            out_id=str(message.notification_id),
        )
        body = await self.guarded(self.client.ivr_call_async(request))
        return Sent(str(body.call_id), self.name)
