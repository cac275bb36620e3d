"""Validate every manifest in examples/ against the CRD schemas of keyward and of the sandbox."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from keyward.crds import cert_manager_crds_path, load_crds
from keyward.sandbox.apiserver.schema import validate_manifest_offline

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    crds = load_crds() + [d for d in yaml.safe_load_all(cert_manager_crds_path().read_text()) if d]
    failures = 0
    for path in sorted((ROOT / "examples").rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc:
                continue
            problems = validate_manifest_offline(doc, crds)
            status = "ok" if not problems else "INVALID: " + "; ".join(problems)
            print(f"{path.relative_to(ROOT)}: {doc['kind']} {doc['metadata']['name']}: {status}")
            failures += bool(problems)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
