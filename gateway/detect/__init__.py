"""Signal detectors that run in the gateway's hot loop, vectorised over many devices."""
