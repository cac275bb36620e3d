"""A cert-manager stand-in for the sandbox: Certificates → keys, CSRs, CertificateRequests → Secrets.

``CertManagerStandIn`` runs the certificate lifecycle; ``approve``, ``deny`` and ``renew`` are what
``cmctl`` does (``keyward sandbox approve|deny|renew``). Development and demo use only: production clusters
run cert-manager itself.
"""

from keyward.sandbox.certmanager.cmctl import approve, deny, renew
from keyward.sandbox.certmanager.controller import CertManagerStandIn

__all__ = ["CertManagerStandIn", "approve", "deny", "renew"]
