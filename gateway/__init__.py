"""eldercare-gateway runtime: ingest, pipeline, storage, notify and API."""
