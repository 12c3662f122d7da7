"""Region losses (to be filled)."""
