"""keyward.controllers."""
