"""The CRD schema cases (the EST seed's five among them) through the real kubectl against the sandbox."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.support.tools import kubectl

CASES = sorted((Path(__file__).parent.parent / "data" / "crd-cases").glob("*.yaml"))


def expectation(case: Path) -> tuple[str, str, dict[str, object]]:
    text = case.read_text()
    verdict, _, field = text.splitlines()[0].removeprefix("# expect:").strip().partition(" ")
    return verdict, field.strip(), yaml.safe_load(text)


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
async def test_kubectl_create_of_schema_case(case: Path, namespace: str) -> None:
    verdict, field, doc = expectation(case)
    result = await kubectl("create", "-n", namespace, "-f", str(case), "-o", "json", check=False)
    if verdict == "accepted":
        assert result.returncode == 0, result.stderr
        created = json.loads(result.stdout)
        assert created["kind"] == doc["kind"]
        await kubectl("delete", "-n", namespace, "-f", str(case), "--wait=false")
    else:
        assert result.returncode != 0
        assert "is invalid" in result.stderr and field in result.stderr, result.stderr


async def test_seed_minimal_est_issuer_gets_defaults(namespace: str) -> None:
    case = Path(__file__).parent.parent / "data" / "crd-cases" / "estissuer-correct-min.yaml"
    result = await kubectl("create", "-n", namespace, "-f", str(case), "-o", "json")
    spec = json.loads(result.stdout)["spec"]
    assert spec["port"] == 443 and spec["label"] == ""


async def test_seed_bad_port_names_the_field_like_kube_apiserver(namespace: str) -> None:
    case = Path(__file__).parent.parent / "data" / "crd-cases" / "estissuer-bad-port.yaml"
    result = await kubectl("create", "-n", namespace, "-f", str(case), check=False)
    assert result.returncode != 0
    assert "spec.port: Invalid value: 123456: spec.port in body should be less than or equal to 65535" in (
        result.stderr
    )
