"""Select stage (see its issue)."""
