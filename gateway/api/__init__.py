"""The operator console's HTTP API: alerts, elders, devices, fences, responders, users."""
