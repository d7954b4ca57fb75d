"""Deploy stage (see its issue)."""
