"""keyward: certificates for Kubernetes from PKCS#11 token-backed CAs and RFC 7030 EST servers."""

__version__ = "0.1.0"

from keyward import fips as _fips

if _fips.requested():  # before anything loads cryptography: see keyward.fips.load_openssl
    _fips.load_openssl()
