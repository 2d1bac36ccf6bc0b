"""The appliance daemon: one poller and store, published over a Unix-socket feed to local clients
and to the TUI sessions of the SSH console. Kept import-light: the settings module is read by
`sovereign_tui.config`."""
