"""keyward.operator: the Kubernetes operator (kopf handlers over the issuers domain)."""
