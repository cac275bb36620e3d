"""Validate every manifest in examples/ against the CRD schemas of keyward and of the sandbox.

Custom resources go through the same prune → default → validate steps as a create in the API server;
built-in kinds (Namespace, Secret, CertificateSigningRequest) are listed as not schema-checked here.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import yaml

from keyward.kube.crds import load_cert_manager_crds, load_crds
from keyward.sandbox.apiserver.schema import apply_defaults, prune, validate

ROOT = Path(__file__).resolve().parent.parent


def schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) → openAPIV3Schema, for every served version of every CRD."""
    out = {}
    for crd in load_crds() + load_cert_manager_crds():
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            out[(f"{group}/{version['name']}", kind)] = version["schema"]["openAPIV3Schema"]
    return out


def main() -> int:
    known = schemas()
    failures = 0
    for path in sorted((ROOT / "examples").rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc:
                continue
            where = f"{path.relative_to(ROOT)}: {doc['kind']} {doc['metadata']['name']}"
            schema = known.get((doc["apiVersion"], doc["kind"]))
            if schema is None:
                print(f"{where}: built-in kind, not schema-checked here")
                continue
            obj = copy.deepcopy(doc)
            prune(obj, schema)
            apply_defaults(obj, schema)
            errors = validate(obj, schema)
            print(f"{where}: " + ("valid" if not errors else "INVALID: " + "; ".join(map(str, errors))))
            failures += bool(errors)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
