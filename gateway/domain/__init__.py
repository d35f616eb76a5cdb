"""The domain: elders, their care profiles, devices, fences, the people who answer, and
the kinds of detection; loaded from a registry file or the database and watched for changes.

Everything else imports this package; it imports nothing of the gateway's but ``config``
and ``error_text`` (the layers contract in .importlinter keeps it so).
"""
