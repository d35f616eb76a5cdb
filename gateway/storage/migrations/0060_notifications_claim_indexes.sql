-- outbox indexes for a mass event: a phone's recent calls, and the rows a poller may claim
-- (issue 19, bench/flood.py): each voice page's "calls to this phone in the last
-- hour" scanned the whole outbox (0.98 s for a 500-alert hand-over; 0.08 s with this index),
-- and the poller's claim looks at 'sending' rows (expired leases) as well as 'pending' ones
CREATE INDEX IF NOT EXISTS notifications_recent_calls ON notifications (phone, updated_at) WHERE channel = 'voice';
CREATE INDEX IF NOT EXISTS notifications_claimable ON notifications (next_attempt_at, id) WHERE status IN ('pending', 'sending');
