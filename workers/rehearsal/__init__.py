"""Rehearsal: a lab replica of a real org (`replica`), and a change tried on it first."""
