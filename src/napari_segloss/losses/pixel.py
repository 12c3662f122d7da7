"""Pixel losses (to be filled)."""
