"""enos."""
