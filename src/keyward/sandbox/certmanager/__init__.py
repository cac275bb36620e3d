"""A cert-manager stand-in for the sandbox: Certificates → keys, CSRs, CertificateRequests → Secrets.

``CertManagerStandIn`` runs the certificate lifecycle; ``approve``, ``deny`` and ``renew`` are what
``cmctl`` does (``keyward sandbox approve|deny|renew``). Development and demo use only: production clusters
run cert-manager itself.
"""

from pathlib import Path

from keyward.sandbox.certmanager.cmctl import approve, deny, renew
from keyward.sandbox.certmanager.controller import CertManagerStandIn

#: The ServiceAccount the stand-in acts as, like cert-manager's controller.
NAMESPACE = "cert-manager"
SERVICE_ACCOUNT = "cert-manager"
#: Its ClusterRoles: the controller's, and approval of cert-manager's and keyward's issuer kinds.
RBAC_PATH = Path(__file__).with_name("rbac.yaml")

__all__ = ["NAMESPACE", "RBAC_PATH", "SERVICE_ACCOUNT", "CertManagerStandIn", "approve", "deny", "renew"]
