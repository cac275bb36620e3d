"""`make demo`: keyward's walkthroughs, end to end, on this machine.

1. The CLI and the example manifests (validated against the CRD schemas).
2. Seed 001 (Trusted Certificate Service) in the sandbox: TCSIssuer my-ca, the CA key in the token, a
   cert-manager Certificate approved and issued, a Kubernetes CSR approved and issued — each certificate
   verified with openssl against the CA.
Each step prints the command a user would type, then its output.
"""

from __future__ import annotations

import base64
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
STATE = ROOT / ".keyward" / "demo"


def banner(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def run(
    *args: str,
    check: bool = True,
    quiet: bool = False,
    input_text: str | None = None,
    cwd: Path | None = None,
) -> str:
    print("$ " + " ".join(shlex.quote(a) for a in args), flush=True)
    result = subprocess.run(args, capture_output=True, text=True, input=input_text, cwd=cwd, check=False)
    if not quiet and result.stdout:
        print(result.stdout.rstrip(), flush=True)
    if result.returncode != 0:
        print(result.stderr.rstrip(), file=sys.stderr, flush=True)
        if check:
            raise SystemExit(f"demo step failed: {' '.join(args)}")
    return result.stdout


def wait_until(what: str, probe, timeout: float = 60.0) -> str:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.2)
    raise SystemExit(f"demo: timed out waiting for {what}")


def jsonpath(*args: str) -> str:
    result = subprocess.run(["kubectl", "get", *args], capture_output=True, text=True, check=False)
    return result.stdout.strip() if result.returncode == 0 else ""


def keyward(*args: str) -> list[str]:
    return [str(BIN / "keyward"), *args]


def cli_and_manifests() -> None:
    banner("The keyward command")
    run(*keyward("--help"))
    banner("The example manifests validate against keyward's CRD schemas")
    run(str(BIN / "python"), str(ROOT / "scripts" / "validate_examples.py"))


def tcs_walkthrough(work: Path) -> None:
    banner("Seed 001: a token-backed CA issuer (TCSIssuer my-ca)")
    run("kubectl", "create", "ns", "sandbox")
    run("kubectl", "create", "-f", str(ROOT / "examples/tcs/issuer-my-ca.yaml"))
    wait_until(
        "my-ca Ready",
        lambda: (
            jsonpath(
                "tcsissuer",
                "my-ca",
                "-n",
                "sandbox",
                "-o",
                "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
            )
            == "True"
        ),
    )
    run("kubectl", "get", "tcsissuers", "-n", "sandbox")
    run("kubectl", "get", "secret", "my-ca-cert", "-n", "sandbox")
    print("The Secret's tls.key is empty — the CA key never leaves the token:")
    key = run("kubectl", "get", "secrets", "-n", "sandbox", "my-ca-cert", "-o", "jsonpath={.data.tls\\.key}")
    assert key == "", "tls.key must be empty"
    print("(empty)")
    ca_pem = base64.b64decode(
        jsonpath("secret", "my-ca-cert", "-n", "sandbox", "-o", "jsonpath={.data.ca\\.crt}")
    )
    (work / "ca.pem").write_bytes(ca_pem)
    run("openssl", "x509", "-in", str(work / "ca.pem"), "-noout", "-subject", "-issuer", "-dates")

    banner("The token's view of the CA key (pkcs11-tool from OpenSC)")
    import json

    hsm = json.loads((STATE / "hsm.json").read_text())
    env_note = f"SOFTHSM2_CONF={hsm['softhsm2Conf']}"
    os.environ["SOFTHSM2_CONF"] = hsm["softhsm2Conf"]
    print(
        f"$ {env_note} pkcs11-tool --module {hsm['module']} --token-label {hsm['tokenLabel']} "
        "--login --pin $(jq -r .userPin hsm.json) -O"
    )
    listing = subprocess.run(
        [
            "pkcs11-tool",
            "--module",
            hsm["module"],
            "--token-label",
            hsm["tokenLabel"],
            "--login",
            "--pin",
            hsm["userPin"],
            "-O",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    print(listing.rstrip())

    banner("A cert-manager Certificate issued by my-ca, after approval")
    run("kubectl", "create", "-f", str(ROOT / "examples/tcs/certificate.yaml"))
    request = wait_until(
        "the CertificateRequest",
        lambda: jsonpath("certificaterequest", "-n", "sandbox", "-o", "jsonpath={.items[0].metadata.name}"),
    )
    run("kubectl", "get", "certificaterequest", "-n", "sandbox")
    print("It waits for approval; nothing is signed before it.")
    run(*keyward("sandbox", "approve", request, "-n", "sandbox"))
    wait_until(
        "the Certificate Ready",
        lambda: (
            jsonpath(
                "certificate",
                "my-certificate",
                "-n",
                "sandbox",
                "-o",
                "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
            )
            == "True"
        ),
    )
    run("kubectl", "get", "certificates,secret", "-n", "sandbox")
    chain = base64.b64decode(
        jsonpath("secret", "demo-cert-tls", "-n", "sandbox", "-o", "jsonpath={.data.tls\\.crt}")
    )
    (work / "demo-cert.pem").write_bytes(chain)
    run("openssl", "verify", "-CAfile", str(work / "ca.pem"), str(work / "demo-cert.pem"))
    run("openssl", "x509", "-in", str(work / "demo-cert.pem"), "-noout", "-subject", "-issuer", "-dates")

    banner("A Kubernetes CSR signed by my-ca (signerName tcsissuer.tcs.intel.com/sandbox.my-ca)")
    run(
        "openssl",
        "req",
        "-new",
        "-nodes",
        "-newkey",
        "rsa:3072",
        "-keyout",
        "privkey.pem",
        "-out",
        "csr.pem",
        "-subj",
        "/O=Foo Company/CN=foo.bar.com",
        cwd=work,
        quiet=True,
    )
    request_b64 = base64.b64encode((work / "csr.pem").read_bytes()).decode()
    manifest = (ROOT / "examples/tcs/csr.yaml").read_text().replace("${CSR_BASE64}", request_b64)
    run("kubectl", "apply", "-f", "-", input_text=manifest)
    run("kubectl", "get", "csr")
    run("kubectl", "certificate", "approve", "test-csr")
    issued = wait_until(
        "the CSR certificate", lambda: jsonpath("csr", "test-csr", "-o", "jsonpath={.status.certificate}")
    )
    (work / "foo.pem").write_bytes(base64.b64decode(issued))
    run("kubectl", "get", "csr", "test-csr")
    run("openssl", "verify", "-CAfile", str(work / "ca.pem"), str(work / "foo.pem"))
    run("openssl", "x509", "-in", str(work / "foo.pem"), "-noout", "-subject", "-ext", "extendedKeyUsage")


def main() -> None:
    cli_and_manifests()
    if STATE.exists():
        shutil.rmtree(STATE)
    work = Path(tempfile.mkdtemp(prefix="keyward-demo-"))
    kubeconfig = STATE / "kubeconfig"
    banner("Start the sandbox: Kubernetes API emulation, cert-manager stand-in, SoftHSM2 token, operator")
    print(f"$ keyward sandbox --state-dir {STATE.relative_to(ROOT)} &")
    log = open(work / "sandbox.log", "w")  # noqa: SIM115
    sandbox = subprocess.Popen(
        keyward("sandbox", "--state-dir", str(STATE), "--kubeconfig", str(kubeconfig)),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    os.environ["KUBECONFIG"] = str(kubeconfig)
    os.environ["KUBECACHEDIR"] = str(STATE / "kube-cache")  # no discovery cache from an earlier port
    try:
        wait_until(
            "the sandbox", lambda: kubeconfig.exists() and jsonpath("ns", "keyward-system"), timeout=30
        )
        print(f"$ export KUBECONFIG={kubeconfig}")
        run("kubectl", "get", "crds")
        tcs_walkthrough(work)
        banner("Done: every certificate above verified against its CA with openssl.")
    except BaseException:
        print((work / "sandbox.log").read_text()[-4000:], file=sys.stderr)
        operator_log = STATE / "operator.log"
        if operator_log.exists():
            print(operator_log.read_text()[-4000:], file=sys.stderr)
        raise
    finally:
        sandbox.terminate()
        sandbox.wait(timeout=20)
        log.close()


if __name__ == "__main__":
    main()
