"""A loopback fake of the parts of Twilio the gateway uses: two REST endpoints and the webhooks.

Why a fake server and not a mocked client: the real ``twilio`` package must be exercised
(URL building, form encoding, basic auth, error parsing, its exceptions), so tests and
the demo point the real async client at this server (``client.api.base_url =
fake.base_url``) and the fake answers the way Twilio does:

* ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` (To, From or
  MessagingServiceSid, Body, StatusCallback) and ``.../Calls.json`` (To, From, Twiml or
  Url, StatusCallback, StatusCallbackEvent), form encoded, HTTP basic auth with the
  account SID and auth token -> 201 and the resource JSON (``sid`` "SM"/"CA" + 32 hex,
  ``status`` "queued"), or an error in Twilio's shape ``{"code", "message",
  "more_info", "status"}``: 20003/401 bad credentials, 21211 invalid number, 21610
  blocked recipient, 20429/429, 20500/500, and the 2xxxx codes for missing parameters.
* After accepting, it calls back like Twilio: form-encoded POSTs signed with
  ``X-Twilio-Signature`` (``RequestValidator(auth_token).compute_signature(url,
  params)``) and an ``I-Twilio-Idempotency-Token``. Messages go sent -> delivered (or
  end undelivered/failed with an ErrorCode, see ``deliver_as``); calls go initiated ->
  ringing -> answered (in-progress) -> completed, or end no-answer/busy/failed (see
  ``answer_as``). Only the events the call asked for are posted ("completed" alone when
  it named none).
* It plays the people: ``press_key`` posts the ``<Gather>`` action of the call's TwiML,
  ``reply_sms`` posts an incoming SMS, ``redeliver`` repeats any webhook as Twilio's
  retries do (same parameters, signature and idempotency token).
* Failure injection (``fail_next``, ``fail_for``, ``fail_number``) for retry and
  failover tests; refused requests are recorded too, so attempts can be counted.

Stricter than Twilio on purpose: TwiML that is not well-formed XML is refused when the
call is created (12100) instead of failing the call later. A ``Url`` is recorded but
never fetched: the gateway sends its TwiML inline.

Timing: each status step comes ``step_s`` after the previous one (0.05 s by default);
an answered call waits up to ``answered_call_s`` for a key press, then completes.
``stop()`` cancels callbacks still pending and releases held ("timeout") requests.

Threads: the server runs on the loop that called ``start()``; ``running_in_thread``
gives it a loop of its own for sync code or a gateway on another loop. Records are
read under a lock from any thread; the async helpers hop to the server's loop.

The auth token is never logged; phone numbers are logged at debug level only.


The fake is split by job: ``records`` (what it records), ``formats`` (Twilio's validation
rules), ``rest_api`` (the endpoints), ``progress`` (statuses and callbacks), ``people``
(playing the responder), ``behaviour`` (failure injection and outcomes), ``records_view``
(reading and waiting), ``server`` (``FakeTwilio``, ``running_in_thread``).
"""
