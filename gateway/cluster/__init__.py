"""Scale-out: several gateway processes sharing one broker and one database.

    shared subscription ($share/<group>/...) --> store rows (COPY | spool) --> ack     (service.py, as before)
    detect stream (own session, every message) --> owner? --> detect --> detections --> ack
    gateway_instances (heartbeats) --> live set --> owner of an elder: rendezvous hashing over the live ids

Why two streams: Mosquitto deals a shared subscription out round-robin, message by
message, so a device's readings alternate between instances and no single instance
could count a fence dwell or a persistence streak. Storing does not care who stores a
row; detecting needs all of a device's readings, in order, in one place. So storage
keeps the shared subscription, and each instance reads the whole stream a second time
on a connection of its own, looks up the owner of each message's device from its topic
(a dict lookup), and decodes and detects only its own elders' messages. The others are
acknowledged at once; device events (SOS, fall, cancel) of other instances' elders are
also kept in memory for ``cluster.replay_s``: they are rare, and they must survive their
owner dying before it detected them.

Ownership is per elder (a device bound to no elder is its own key), so fences, which
belong to an elder, see every fix of the elder's band on one instance. When the live
set changes, an instance forgets the elders it lost and rebuilds the state of those it
gained by replaying their last ``cluster.replay_s`` of stored rows through the detectors
(``DetectorSet.replay``) before it detects anything more; rows already replayed are not
detected a second time when they arrive live.

No emergency is lost between an owner dying and the others noticing:

* every instance keeps each device event its detect stream sees, whoever owns it, and a
  replay adds those of the elders it gains to what it reads from the database;
* an instance whose heartbeat stopped stays a member (its elders stay unowned by the
  others) until one live instance has claimed its row, taken over its shared session
  (whatever the broker queued for it, or sent it and never had acknowledged, is stored
  like any message), ended that session and its detect session, and deleted the row;
* only then does the live set change, and the new owners' replay finds every row of the
  gap. Detections dedupe on their unique key and alerts on theirs, so replaying an SOS
  that was already handled is a no-op, and one that was not becomes its alert.

Writes are never doubled on purpose: each row is stored by the one instance the shared
subscription gave it to, detections only by owners. Where owners overlap for a moment
(a live-set change seen a heartbeat apart), both insert the same detection keys; they
are inserted in one canonical order, so the two transactions wait, never deadlock.
"""
