-- registry version: running gateways reload elders, devices and fences when it moves
-- Every gateway process watches this number and reloads its detectors' registry, so a fence
-- edited in the console (or an import) takes effect everywhere without a restart.
CREATE SEQUENCE IF NOT EXISTS registry_version;
CREATE OR REPLACE FUNCTION bump_registry_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM nextval('registry_version');
  RETURN NULL;
END $$;
CREATE OR REPLACE TRIGGER elders_registry_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON elders
  FOR EACH STATEMENT EXECUTE FUNCTION bump_registry_version();
CREATE OR REPLACE TRIGGER devices_registry_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON devices
  FOR EACH STATEMENT EXECUTE FUNCTION bump_registry_version();
CREATE OR REPLACE TRIGGER geofences_registry_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON geofences
  FOR EACH STATEMENT EXECUTE FUNCTION bump_registry_version();
CREATE OR REPLACE TRIGGER responders_registry_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON responders
  FOR EACH STATEMENT EXECUTE FUNCTION bump_registry_version();
CREATE OR REPLACE TRIGGER roster_overrides_registry_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON roster_overrides
  FOR EACH STATEMENT EXECUTE FUNCTION bump_registry_version();
