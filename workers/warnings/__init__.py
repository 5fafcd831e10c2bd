"""Warnings before anything expires: rules, what was said, the daily sweep."""
