"""Local fakes of the providers the gateway pages through (Twilio, Aliyun, Tencent Cloud), for tests and the demo."""
