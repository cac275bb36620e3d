"""keyward.issuers."""
