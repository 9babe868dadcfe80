"""Fuzz targets for the dialect decoders (`make fuzz`; a short run is in the test suite)."""
