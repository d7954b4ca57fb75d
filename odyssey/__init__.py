"""Odyssey."""
