"""keyward.est: RFC 7030 (EST) message bodies (``wire``) and the EST server (``server``).

Pure modules: no Kubernetes and no PKCS#11 here. The CA side is the ``EstCa`` protocol (``ca``).
"""
