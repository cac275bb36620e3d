"""One audit record per certificate the EST server hands out: who asked, and what they got.

Records hold names and numbers only. Passwords, keys and request bodies never get here, so a record can
be logged and shipped anywhere.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509

from keyward.est.server.ca import ClientIdentity

logger = logging.getLogger("keyward.est.audit")


@dataclass(frozen=True)
class AuditRecord:
    label: str
    operation: str
    client: ClientIdentity
    subject: str
    sans: tuple[str, ...]
    serial: int
    not_after: datetime

    @classmethod
    def for_certificate(
        cls, label: str, operation: str, client: ClientIdentity, certificate: x509.Certificate
    ) -> AuditRecord:
        return cls(
            label=label,
            operation=operation,
            client=client,
            subject=certificate.subject.rfc4514_string(),
            sans=describe_sans(certificate),
            serial=certificate.serial_number,
            not_after=certificate.not_valid_after_utc,
        )

    def log_line(self) -> str:
        """One line of JSON: client-chosen strings (user names, subjects) cannot forge extra log lines."""
        return "EST enrollment " + json.dumps(
            {
                "label": self.label,
                "operation": self.operation,
                "client": str(self.client),
                "subject": self.subject,
                "sans": list(self.sans),
                "serial": f"{self.serial:#x}",
                "not_after": self.not_after.isoformat(),
            },
            ensure_ascii=True,
        )


def describe_sans(certificate: x509.Certificate) -> tuple[str, ...]:
    """SANs as OpenSSL prints them (``DNS:a``, ``IP Address:1.2.3.4`` ...), in certificate order."""
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    return tuple(_describe(name) for name in names)


def _describe(name: x509.GeneralName) -> str:
    if isinstance(name, x509.DNSName):
        return f"DNS:{name.value}"
    if isinstance(name, x509.IPAddress):
        return f"IP Address:{name.value}"
    if isinstance(name, x509.UniformResourceIdentifier):
        return f"URI:{name.value}"
    if isinstance(name, x509.RFC822Name):
        return f"email:{name.value}"
    if isinstance(name, x509.DirectoryName):
        return f"DirName:{name.value.rfc4514_string()}"
    if isinstance(name, x509.RegisteredID):
        return f"Registered ID:{name.value.dotted_string}"
    if isinstance(name, x509.OtherName):
        return f"othername:{name.type_id.dotted_string}"
    return type(name).__name__


def emit(record: AuditRecord) -> None:
    logger.info("%s", record.log_line())
