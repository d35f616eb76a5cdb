"""Tencent Cloud SMS (``SendSms`` 2021-01-11) and voice messages (VMS ``SendTtsVoice``) through the official SDKs.

Tencent sends only registered templates, their parameters numbered ({1}, {2} ...). The
voice message reads the ``page`` voice template; the key the person presses comes back
in the ``voicekey_callback`` and the call's end in ``voiceprompt_callback``
(``gateway.notify.china_callbacks``), both naming the call by its ``callid``. SMS carry
the notification id as ``SessionContext``.

The VMS package has no async client, so both run the SDK's synchronous client in a
worker thread; the SDK's own time limit (``reqTimeout``) bounds each request.

Errors: an SDK exception is retryable for Tencent's own trouble (``InternalError``,
``RequestLimitExceeded``, network) and permanent otherwise (``AuthFailure``, a bad
number or template); a send refused per number in ``SendStatusSet`` (``Code`` other
than ``Ok``) is permanent. The outbox then tries the next provider at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from tencentcloud.common import credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.sms.v20210111 import models as sms_models
from tencentcloud.sms.v20210111.sms_client import SmsClient
from tencentcloud.vms.v20200902 import models as vms_models
from tencentcloud.vms.v20200902.vms_client import VmsClient

from gateway.config import TencentConfig
from gateway.notify.base import Outbound, PermanentError, RetryableError, Sent
from gateway.notify.template_fields import numbered_params, pick

SMS_ENDPOINT = "sms.tencentcloudapi.com"
VOICE_ENDPOINT = "vms.tencentcloudapi.com"
RETRYABLE_PREFIXES = ("InternalError", "RequestLimitExceeded", "ClientNetworkError", "ServerNetworkError")
PLAY_TIMES = 2
T = TypeVar("T")


class TencentChannel:
    name = "tencent"

    def __init__(self, config: TencentConfig, secret: str, default_endpoint: str) -> None:
        self.config = config
        self._credential = credential.Credential(config.access_key_id, secret)
        http = HttpProfile(
            protocol=config.protocol, endpoint=config.endpoint or default_endpoint, reqTimeout=int(config.timeout_s)
        )
        self._profile = ClientProfile(httpProfile=http)

    def __repr__(self) -> str:  # the secret never reaches a log line
        return f"{type(self).__name__}(endpoint={self._profile.httpProfile.endpoint!r})"

    async def guarded(self, call: Callable[[], T]) -> T:
        try:
            async with asyncio.timeout(self.config.timeout_s + 2):
                return await asyncio.to_thread(call)
        except asyncio.CancelledError:
            raise
        except TencentCloudSDKException as error:
            code = str(error.code or "")
            kind = RetryableError if code.startswith(RETRYABLE_PREFIXES) else PermanentError
            raise kind(f"tencent {code}: {error.message}", code=code) from None
        except TimeoutError:
            raise RetryableError("tencent request timed out") from None
        except Exception as error:
            raise RetryableError(f"tencent request failed: {type(error).__name__}: {error}") from None

    async def close(self) -> None:
        """The SDK opens a connection per request; nothing is held."""


class TencentSms(TencentChannel):
    channels = frozenset({"sms"})

    def __init__(self, config: TencentConfig, secret: str) -> None:
        super().__init__(config, secret, SMS_ENDPOINT)
        self.client = SmsClient(self._credential, config.region, self._profile)

    async def send(self, message: Outbound) -> Sent:
        purpose = "summary" if message.summary else message.purpose
        template = pick(self.config.sms_templates, purpose, message.kind)
        request = sms_models.SendSmsRequest()
        request.PhoneNumberSet = [message.phone]
        request.SmsSdkAppId = self.config.sms_app_id
        request.SignName = self.config.sign_name
        request.TemplateId = template.template
        request.TemplateParamSet = numbered_params(template, message.fields)
        request.SessionContext = str(message.notification_id)
        response: Any = await self.guarded(lambda: self.client.SendSms(request))
        statuses = response.SendStatusSet or []
        if not statuses:
            raise RetryableError("tencent answered without a send status")
        status = statuses[0]
        if status.Code != "Ok":
            raise PermanentError(f"tencent refused: {status.Code} {status.Message}", code=status.Code)
        return Sent(str(status.SerialNo), self.name)


class TencentVoice(TencentChannel):
    channels = frozenset({"voice"})

    def __init__(self, config: TencentConfig, secret: str) -> None:
        super().__init__(config, secret, VOICE_ENDPOINT)
        self.client = VmsClient(self._credential, config.region, self._profile)

    async def send(self, message: Outbound) -> Sent:
        if not self.config.voice_app_id:
            raise PermanentError("notify.tencent.voice_app_id is not set: no voice through Tencent")
        template = pick(self.config.voice_templates, "page", message.kind)
        request = vms_models.SendTtsVoiceRequest()
        request.TemplateId = template.template
        request.TemplateParamSet = numbered_params(template, message.fields)
        request.CalledNumber = message.phone
        request.VoiceSdkAppid = self.config.voice_app_id
        request.PlayTimes = PLAY_TIMES
        request.SessionContext = str(message.notification_id)
        response: Any = await self.guarded(lambda: self.client.SendTtsVoice(request))
        call_id = getattr(response.SendStatus, "CallId", None)
        if not call_id:
            raise RetryableError("tencent answered without a call id")
        return Sent(str(call_id), self.name)
