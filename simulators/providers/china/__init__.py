"""Loopback fakes of Aliyun's and Tencent Cloud's SMS and voice APIs, for tests and the demo.

As with the fake Twilio, the real SDKs are pointed at them (``endpoint``), so the SDKs'
request signing, encoding and error parsing are exercised: ``base`` (the server, what it
records, failures, playing the people), ``aliyun`` and ``tencent`` (each provider's
requests, signatures, answers and receipts).
"""
