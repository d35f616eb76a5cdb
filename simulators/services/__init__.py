"""Private PostgreSQL and Mosquitto instances for tests, scenarios and the demo (own data folder, free port)."""
