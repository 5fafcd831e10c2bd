"""What people see: Block Kit messages, the operation card, terminal tables."""
