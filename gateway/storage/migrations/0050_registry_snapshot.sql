-- a snapshot of the registry (msgpack), keyed by a fingerprint of its rows, for fast restarts:
-- a restart decodes it instead of rebuilding 12,000 elders from their rows (registry_db.py,
-- issue 19)
CREATE TABLE IF NOT EXISTS registry_snapshot (
    only_one boolean PRIMARY KEY DEFAULT true CHECK (only_one),
    fingerprint bigint NOT NULL,
    body bytea NOT NULL,
    built_at timestamptz NOT NULL DEFAULT now()
);
