"""merchants package."""
