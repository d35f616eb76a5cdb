-- console users, sessions, login throttle, audit log; scope indexes
CREATE TABLE IF NOT EXISTS users (
  username text PRIMARY KEY CHECK (username ~ '^[A-Za-z0-9_.@-]{2,64}$'),
  password_hash text NOT NULL,
  role text NOT NULL CHECK (role IN ('hotline', 'post_station', 'grid_worker', 'family', 'admin')),
  display_name text NOT NULL UNIQUE,
  language text NOT NULL DEFAULT 'zh' CHECK (language IN ('zh', 'en')),
  community text,
  grid text,
  elder_id text,
  created_at timestamptz NOT NULL DEFAULT now(),
  password_changed_at timestamptz NOT NULL DEFAULT now(),
  CHECK (role <> 'post_station' OR community IS NOT NULL),
  CHECK (role <> 'grid_worker' OR grid IS NOT NULL),
  CHECK (role <> 'family' OR elder_id IS NOT NULL)
);
CREATE TABLE IF NOT EXISTS sessions (
  token_hash bytea PRIMARY KEY,
  username text NOT NULL REFERENCES users (username) ON DELETE CASCADE,
  created_at timestamptz NOT NULL,
  expires_at timestamptz NOT NULL,
  client text
);
CREATE INDEX IF NOT EXISTS sessions_user ON sessions (username);
CREATE INDEX IF NOT EXISTS sessions_expires ON sessions (expires_at);
CREATE TABLE IF NOT EXISTS login_failures (
  id bigserial PRIMARY KEY,
  username text NOT NULL,
  client text NOT NULL,
  at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS login_failures_user ON login_failures (username, at);
CREATE INDEX IF NOT EXISTS login_failures_client ON login_failures (client, at);
CREATE TABLE IF NOT EXISTS audit_log (
  id bigserial PRIMARY KEY,
  at timestamptz NOT NULL DEFAULT now(),
  actor text NOT NULL,
  action text NOT NULL,
  target text,
  detail jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX IF NOT EXISTS audit_log_at ON audit_log (at);
CREATE INDEX IF NOT EXISTS alerts_open_community ON alerts (community, grid) WHERE state <> 'resolved';
CREATE INDEX IF NOT EXISTS alerts_open_grid ON alerts (grid) WHERE state <> 'resolved';
CREATE INDEX IF NOT EXISTS alerts_open_elder ON alerts (elder_id) WHERE state <> 'resolved';
CREATE INDEX IF NOT EXISTS alerts_elder ON alerts (elder_id, alert_id);
CREATE INDEX IF NOT EXISTS alerts_community_id ON alerts (community, alert_id);
CREATE INDEX IF NOT EXISTS alerts_grid_id ON alerts (grid, alert_id);
CREATE INDEX IF NOT EXISTS elders_community ON elders (community, grid, elder_id);
CREATE INDEX IF NOT EXISTS elders_grid ON elders (grid, elder_id);
CREATE INDEX IF NOT EXISTS devices_elder ON devices (elder_id);
CREATE INDEX IF NOT EXISTS detections_alert ON detections (alert_id);
