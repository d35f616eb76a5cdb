-- detections and geofences
CREATE TABLE IF NOT EXISTS detections (
  id bigserial PRIMARY KEY,
  elder_id text,
  device_id text NOT NULL,
  kind text NOT NULL,
  severity text NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
  ts timestamptz NOT NULL,
  cleared boolean NOT NULL DEFAULT false,
  evidence jsonb NOT NULL DEFAULT '{}'::jsonb,
  detected_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (device_id, kind, ts, cleared)
);
CREATE INDEX IF NOT EXISTS detections_elder_ts ON detections (elder_id, ts);
CREATE TABLE IF NOT EXISTS geofences (
  elder_id text NOT NULL REFERENCES elders (elder_id) ON DELETE CASCADE,
  fence_id text NOT NULL,
  spec jsonb NOT NULL,
  PRIMARY KEY (elder_id, fence_id)
);
ALTER TABLE elders ADD COLUMN IF NOT EXISTS updated_at timestamptz NOT NULL DEFAULT now();
