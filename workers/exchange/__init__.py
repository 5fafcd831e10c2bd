"""Talking to Exchange: pypsrp sessions, the client, object parsing, errors."""
