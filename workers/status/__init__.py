"""What an org looks like: observation, collection, findings, decisions, report."""
