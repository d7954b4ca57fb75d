"""Align stage (see its issue)."""
