-- audit log indexes: by actor, by target (reads of elders' records are logged)
-- Reads are logged now, so the log grows by one row per view: the admin's filters need indexes.
CREATE INDEX IF NOT EXISTS audit_log_actor ON audit_log (actor, id);
CREATE INDEX IF NOT EXISTS audit_log_target ON audit_log (target, id);
CREATE INDEX IF NOT EXISTS audit_log_action ON audit_log (action, id);
