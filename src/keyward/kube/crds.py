"""Where keyward's CustomResourceDefinitions live, and loading them.

The CRDs are kept once, as YAML in the repository's ``deploy/crds`` (what ``kubectl apply -f deploy/crds``
installs). A wheel carries the same files as package data at ``keyward/_data/crds`` (see the hatch
``force-include`` in pyproject.toml), so the operator, the sandbox and the tests read one source whether
keyward runs from a checkout or from an installed package.

cert-manager's own CRDs are not ours to install in a real cluster; the sandbox needs them to stand in for
cert-manager, so a set written from cert-manager's published API ships inside ``keyward.sandbox``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from keyward.errors import UserError

_PACKAGE_DIR = Path(__file__).resolve().parents[1]  # keyward/
_SOURCE_CRDS = _PACKAGE_DIR.parents[1] / "deploy" / "crds"
_PACKAGED_CRDS = _PACKAGE_DIR / "_data" / "crds"


def crd_dir() -> Path:
    """The directory holding keyward's CRDs: the checkout's deploy/crds first, else the packaged copy."""
    for candidate in (_SOURCE_CRDS, _PACKAGED_CRDS):
        if candidate.is_dir() and any(candidate.glob("*.yaml")):
            return candidate
    raise UserError(
        f"keyward's CustomResourceDefinitions are missing (looked in {_SOURCE_CRDS} and {_PACKAGED_CRDS})",
        "run keyward from a complete checkout, or reinstall the keyward package",
    )


def load_crds() -> list[dict[str, Any]]:
    """Every keyward CRD as a dict, in file-name order (one CRD per file)."""
    return [crd for path in sorted(crd_dir().glob("*.yaml")) for crd in _load_documents(path)]


def cert_manager_crds_path() -> Path:
    """The YAML stream of cert-manager.io/v1 Certificate, CertificateRequest, Issuer and ClusterIssuer."""
    return _PACKAGE_DIR / "sandbox" / "crds" / "cert-manager.yaml"


def load_cert_manager_crds() -> list[dict[str, Any]]:
    """cert-manager's CRDs as dicts, for the sandbox to serve beside keyward's own."""
    return _load_documents(cert_manager_crds_path())


def _load_documents(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as stream:
        documents = [doc for doc in yaml.safe_load_all(stream) if doc is not None]
    for doc in documents:
        if not isinstance(doc, dict) or doc.get("kind") != "CustomResourceDefinition":
            raise UserError(
                f"{path} holds something other than a CustomResourceDefinition", "keep only CRDs in that file"
            )
    return documents
