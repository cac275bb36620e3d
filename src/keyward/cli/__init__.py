"""keyward.cli."""
