"""The SSH console: an asyncssh server whose every session is a TUI process on a PTY, attached
to the daemon's feed."""
