"""Augment stage (see its issue)."""
