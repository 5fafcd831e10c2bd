"""RQ callbacks that run in the worker and write to Slack."""
