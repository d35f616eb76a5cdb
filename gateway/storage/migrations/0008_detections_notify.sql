-- stored detections notify the alert worker
-- A trigger, so no writer (an instance, the spool replay) can forget to, and the wake-up costs
-- the SOS path no round trip. PostgreSQL folds identical notifications of one transaction into one.
CREATE OR REPLACE FUNCTION notify_detections() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('eldercare_detections', '');
  RETURN NULL;
END $$;
CREATE OR REPLACE TRIGGER detections_notify AFTER INSERT ON detections
  FOR EACH STATEMENT EXECUTE FUNCTION notify_detections();
