"""Names of PostgreSQL NOTIFY channels, apart from the schema code (which imports numpy and
the migrations): the alert worker listens on one and should not wait for the rest to load."""

from __future__ import annotations

DETECTIONS_CHANNEL = "eldercare_detections"  # NOTIFY channel of migration 8's trigger
