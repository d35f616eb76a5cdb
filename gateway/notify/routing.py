"""Who carries a message to one person: the order in which the outbox tries the providers.

China's carriers increasingly refuse international call routes and Twilio can take no
SMS reply from a +86 number, so +86 numbers go to the domestic providers first, in
``notify.china_order`` (Aliyun, Tencent, then Twilio by default). Other countries go
to Twilio: Aliyun's and Tencent's domestic templates do not reach them. A recipient's
own ``provider`` preference (from the registry) goes first where it can carry the
number. The log-only console notifier comes last.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.notify.base import Notifier

CHINA_ONLY = frozenset({"aliyun", "tencent"})
CHINA_PREFIX = "+86"


def route(
    notifiers: Sequence[Notifier], channel: str, phone: str, preferred: str | None, china_order: Sequence[str]
) -> list[Notifier]:
    """The notifiers able to carry ``channel`` to ``phone``, best first."""
    china = phone.startswith(CHINA_PREFIX)
    able = [n for n in notifiers if channel in n.channels and (china or n.name not in CHINA_ONLY)]

    def rank(notifier: Notifier) -> tuple[int, int]:
        if notifier.name == "console":
            return (2, 0)
        if notifier.name == preferred:
            return (0, 0)
        order = list(china_order) if china else []
        return (1, order.index(notifier.name) if notifier.name in order else len(order))

    return sorted(able, key=rank)
