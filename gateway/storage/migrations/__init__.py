"""Numbered SQL migrations: ``NNNN_short_name.sql``, applied in version order, one transaction each.

The first line, ``-- <description>``, is the name recorded in ``schema_migrations``. A line
``-- run: <step>`` runs the named Python step (gateway/storage/migration_steps.py) at that
point, for what plain SQL cannot say (TimescaleDB or partitions, hypertables, policies).
Ranges: 1-19 storage and core, 20-29, 30-39 and 40-49 for the features being added beside it.
"""
