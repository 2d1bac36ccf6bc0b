"""A fake ``libnvidia-ml.so.1`` (C, built by the tests) and the runner that polls it."""
