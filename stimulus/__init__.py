"""stimulus package."""
