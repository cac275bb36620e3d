"""keyward: certificates for Kubernetes from PKCS#11 token-backed CAs and RFC 7030 EST servers."""

__version__ = "0.1.0"
