"""Optimize stage (see its issue)."""
