"""keyward.pki: pure X.509 logic, with no Kubernetes and no PKCS#11 in sight.

The operator decides *whether* to sign; this package decides *what* gets signed: it checks a request
(``csr``, ``usages``, ``durations``, ``profile``) and builds the certificate (``issue``) with any
``cryptography`` private key, so a token-backed key and an in-memory test key go through the same code.
"""
