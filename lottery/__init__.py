"""lottery package."""
