"""Training stage (see its issue)."""
