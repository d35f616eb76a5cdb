-- gateway instances: heartbeats for scale-out ownership
-- A row whose heartbeat stopped is claimed (retiring_by) by one live instance, which drains
-- that instance's broker sessions and then deletes the row (gateway/cluster.py).
CREATE TABLE IF NOT EXISTS gateway_instances (
  instance_id text PRIMARY KEY,
  shared_client_id text NOT NULL,
  detect_client_id text NOT NULL,
  host text NOT NULL,
  pid integer NOT NULL,
  started_at timestamptz NOT NULL DEFAULT now(),
  heartbeat_at timestamptz NOT NULL DEFAULT now(),
  retiring_by text,
  retiring_at timestamptz
);
