"""Changing an org: operations, their steps and kinds, approval, writer lock, execution."""
