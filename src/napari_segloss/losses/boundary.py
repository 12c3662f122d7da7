"""Boundary losses (to be filled)."""
