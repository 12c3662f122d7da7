"""Compound losses (to be filled)."""
