"""keyward.est.client: an RFC 7030 client for any EST server (explicit trust anchors only, TLS 1.2+,
Basic, Digest or TLS client-certificate authentication)."""

from keyward.est.client.client import BasicAuth, DigestAuth, EstClient, EstEndpoint, Pending
from keyward.est.client.errors import EstError
from keyward.est.client.tls import ClientCertificate

__all__ = ["BasicAuth", "ClientCertificate", "DigestAuth", "EstClient", "EstEndpoint", "EstError", "Pending"]
