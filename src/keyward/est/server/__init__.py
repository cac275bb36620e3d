"""keyward.est.server: an RFC 7030 server on aiohttp, serving several CAs (``EstCa``) on one port."""

from keyward.est.server.audit import AuditRecord
from keyward.est.server.ca import EstCa
from keyward.est.server.server import EstServer, EstTimeouts
from keyward.est.server.tls import ServerTls, TlsSetupError

__all__ = ["AuditRecord", "EstCa", "EstServer", "EstTimeouts", "ServerTls", "TlsSetupError"]
