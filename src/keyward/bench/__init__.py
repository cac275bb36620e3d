"""keyward.bench: ``keyward bench``, throughput of the token, of pki, of the operator and of EST.

Each benchmark measures one layer with everything below it real: (a) signatures in the token, (b)
certificates through ``pki`` with the token key, (c)/(d) issuance end to end through the sandbox API and a
real operator process, (e) EST enrollments over TLS. Comparing neighbouring layers shows where the time
goes, which is what the targets in docs/PERFORMANCE.md are about.
"""
