-- alerts, audit trail, tier firings, notification outbox, responders
CREATE TABLE IF NOT EXISTS responders (
  responder_id text PRIMARY KEY,
  spec jsonb NOT NULL
);
CREATE TABLE IF NOT EXISTS roster_overrides (
  id bigserial PRIMARY KEY,
  spec jsonb NOT NULL
);
CREATE TABLE IF NOT EXISTS alerts (
  alert_id bigserial PRIMARY KEY,
  code text GENERATED ALWAYS AS ('A' || alert_id::text) STORED,
  alert_key text NOT NULL,
  elder_id text,
  device_id text NOT NULL,
  kind text NOT NULL,
  severity text NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
  state text NOT NULL CHECK (state IN ('confirming', 'notifying', 'acknowledged', 'on_scene', 'resolved')),
  policy text NOT NULL,
  community text,
  grid text,
  opened_at timestamptz NOT NULL,
  last_seen_at timestamptz NOT NULL,
  detection_count integer NOT NULL DEFAULT 1,
  evidence jsonb NOT NULL DEFAULT '{}'::jsonb,
  confirm_until timestamptz,
  recovered boolean NOT NULL DEFAULT false,
  acknowledged_at timestamptz,
  acknowledged_by text,
  eta timestamptz,
  on_scene_at timestamptz,
  resolved_at timestamptz,
  resolved_by text,
  outcome text,
  next_check_at timestamptz
);
CREATE UNIQUE INDEX IF NOT EXISTS alerts_one_open_per_key ON alerts (alert_key) WHERE state <> 'resolved';
CREATE INDEX IF NOT EXISTS alerts_due ON alerts (next_check_at) WHERE state <> 'resolved';
CREATE INDEX IF NOT EXISTS alerts_opened ON alerts (opened_at);
CREATE TABLE IF NOT EXISTS alert_events (
  id bigserial PRIMARY KEY,
  alert_id bigint NOT NULL REFERENCES alerts (alert_id),
  at timestamptz NOT NULL,
  event text NOT NULL,
  actor text,
  channel text,
  detail jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX IF NOT EXISTS alert_events_alert ON alert_events (alert_id, at);
CREATE TABLE IF NOT EXISTS tier_firings (
  alert_id bigint NOT NULL REFERENCES alerts (alert_id),
  tier integer NOT NULL,
  round integer NOT NULL,
  at timestamptz NOT NULL,
  reached integer NOT NULL,
  PRIMARY KEY (alert_id, tier, round)
);
CREATE TABLE IF NOT EXISTS notifications (
  id bigserial PRIMARY KEY,
  alert_id bigint NOT NULL REFERENCES alerts (alert_id),
  purpose text NOT NULL CHECK (purpose IN ('page', 'taken', 'retraction', 'resolved', 'summary')),
  tier integer,
  round integer,
  recipient_key text NOT NULL,
  recipient_name text NOT NULL,
  role text NOT NULL,
  phone text NOT NULL,
  language text NOT NULL,
  channel text NOT NULL CHECK (channel IN ('sms', 'voice', 'webhook', 'console')),
  channels jsonb NOT NULL DEFAULT '[]'::jsonb,
  provider text,
  idempotency_key text NOT NULL UNIQUE,
  status text NOT NULL DEFAULT 'pending',
  attempts integer NOT NULL DEFAULT 0,
  next_attempt_at timestamptz NOT NULL DEFAULT now(),
  provider_sid text,
  last_error text,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS notifications_due ON notifications (next_attempt_at) WHERE status = 'pending';
ALTER TABLE detections ADD COLUMN IF NOT EXISTS alert_id bigint;
ALTER TABLE detections ADD COLUMN IF NOT EXISTS handled boolean NOT NULL DEFAULT false;
CREATE INDEX IF NOT EXISTS detections_unhandled ON detections (id) WHERE NOT handled;
CREATE INDEX IF NOT EXISTS notifications_alert ON notifications (alert_id);
