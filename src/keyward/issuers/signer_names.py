"""Kubernetes signer names of keyward's issuers (tcs.md, kubernetes-csr.md).

``tcsissuer.tcs.intel.com/<namespace>.<name>`` and ``tcsclusterissuer.tcs.intel.com/<name>``, with the
plural kind accepted too; the same shapes in ``est.mitre.org`` for EST issuers. The same string is the
CKA_LABEL of the CA key in the token.
"""

from __future__ import annotations

from dataclasses import dataclass

from keyward.issuers.objects import IssuerReference
from keyward.kube.resources import EST_GROUP, TCS_GROUP

# lower-case kind (singular and plural spelling) → (Kind, namespaced)
_KINDS: dict[str, dict[str, tuple[str, bool]]] = {
    TCS_GROUP: {
        "tcsissuer": ("TCSIssuer", True),
        "tcsissuers": ("TCSIssuer", True),
        "tcsclusterissuer": ("TCSClusterIssuer", False),
        "tcsclusterissuers": ("TCSClusterIssuer", False),
    },
    EST_GROUP: {
        "estissuer": ("EstIssuer", True),
        "estissuers": ("EstIssuer", True),
        "estclusterissuer": ("EstClusterIssuer", False),
        "estclusterissuers": ("EstClusterIssuer", False),
    },
}


class MalformedSignerName(ValueError):
    """A signer name in one of our groups that does not name an issuer."""


@dataclass(frozen=True)
class IssuerRef:
    """An issuer, independent of how a request named it."""

    group: str
    kind: str
    name: str
    namespace: str | None = None  # None for cluster issuers

    @property
    def namespaced(self) -> bool:
        return self.namespace is not None

    @property
    def signer_name(self) -> str:
        """The canonical (singular) signer name, also the token label of the CA key."""
        path = f"{self.namespace}.{self.name}" if self.namespace is not None else self.name
        return f"{self.kind.lower()}.{self.group}/{path}"

    def __str__(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind} {where}{self.name}"


def issuer_ref_of(group: str, kind: str, name: str, namespace: str | None = None) -> IssuerRef:
    """The issuer an object of ``kind`` in ``group`` is: namespaced kinds keep their namespace."""
    canonical, namespaced = _KINDS[group][kind.lower()]
    return IssuerRef(group, canonical, name, namespace if namespaced else None)


def is_our_group(signer_name: str) -> bool:
    domain = signer_name.partition("/")[0]
    return any(domain.endswith("." + group) for group in _KINDS)


def parse_signer_name(signer_name: str, *, group: str | None = None) -> IssuerRef | None:
    """The issuer a signer name points at; None when the name is not ours (optionally: not in ``group``).

    Raises MalformedSignerName for a name in our groups that names no issuer.
    """
    domain, slash, path = signer_name.partition("/")
    kind_part, dot, name_group = domain.partition(".")
    if not dot or name_group not in _KINDS or (group is not None and name_group != group):
        return None
    kinds = _KINDS[name_group]
    if kind_part not in kinds:
        raise MalformedSignerName(f"signer name {signer_name!r}: unknown issuer kind {kind_part!r}")
    kind, namespaced = kinds[kind_part]
    if not slash or not path:
        raise MalformedSignerName(f"signer name {signer_name!r} has no issuer after the '/'")
    if namespaced:
        namespace, dot, name = path.partition(".")
        if not dot or not namespace or not name:
            raise MalformedSignerName(
                f"signer name {signer_name!r} must end in <namespace>.<name> for a {kind}"
            )
        return IssuerRef(name_group, kind, name, namespace)
    if "/" in path:
        raise MalformedSignerName(f"signer name {signer_name!r} has more than one '/'")
    return IssuerRef(name_group, kind, path)


def issuer_ref_from_request(issuer_ref: IssuerReference, namespace: str) -> IssuerRef | None:
    """The issuer a CertificateRequest's spec.issuerRef names, if it is one of ours."""
    kinds = _KINDS.get(issuer_ref.group)
    if not kinds or not issuer_ref.name:
        return None
    for spelled, (canonical, namespaced) in kinds.items():
        if issuer_ref.kind.lower() == spelled or issuer_ref.kind == canonical:
            return IssuerRef(issuer_ref.group, canonical, issuer_ref.name, namespace if namespaced else None)
    return None
