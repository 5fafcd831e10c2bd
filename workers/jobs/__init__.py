"""What a worker runs: queues, the job registry, read and change jobs, cron, the worker."""
