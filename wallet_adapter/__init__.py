"""wallet_adapter package."""
