"""keyward.sandbox."""
