"""Alerting: detections become alerts and alerts become pages, tier by tier.

Pure decisions (``lifecycle``, ``escalation``, ``policy``, ``roster``) are functions of
their inputs and an injected clock; ``intake``, ``tier_firing``, ``actions`` and ``store``
are their thin database side; ``engine`` is the facade the gateway calls; ``paging`` runs
its loops and ``worker`` runs them in a process of their own (``notify.alert_worker``).
"""
