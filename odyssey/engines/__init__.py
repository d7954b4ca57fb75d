"""Generation behind one interface (filled in by the engines work)."""
