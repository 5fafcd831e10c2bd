"""bolt listeners: thin - parse, check, enqueue, answer."""
