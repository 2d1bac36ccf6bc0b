"""One module per source: how to read it (targets for the poller) and how to act on it."""
