-- the registry as the detectors and the alert engine hold it, encoded once (msgpack), with the
-- fingerprint of the rows it was built from: a restart decodes it instead of rebuilding
-- 12,000 elders from their rows (registry_db.py, issue 19)
CREATE TABLE IF NOT EXISTS registry_snapshot (
    only_one boolean PRIMARY KEY DEFAULT true CHECK (only_one),
    fingerprint bigint NOT NULL,
    body bytea NOT NULL,
    built_at timestamptz NOT NULL DEFAULT now()
);
