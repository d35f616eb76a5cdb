-- registry, dead letters and time-series tables
CREATE TABLE IF NOT EXISTS elders (
  elder_id text PRIMARY KEY,
  name text NOT NULL,
  community text,
  grid text,
  profile jsonb NOT NULL DEFAULT '{}'::jsonb,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS devices (
  device_id text PRIMARY KEY,
  device_type text NOT NULL CHECK (device_type IN ('wristband', 'pager', 'glucose', 'bp')),
  elder_id text REFERENCES elders (elder_id) ON DELETE SET NULL,
  reporting_interval_s integer NOT NULL DEFAULT 60,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS dead_letters (
  id bigserial PRIMARY KEY,
  received_at timestamptz NOT NULL,
  topic text NOT NULL,
  reason text NOT NULL,
  payload bytea NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_received_at ON dead_letters (received_at);
CREATE TABLE IF NOT EXISTS storage_mode (
  only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
  mode text NOT NULL
);
-- run: time_series_tables
