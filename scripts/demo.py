"""`make demo`: keyward's walkthroughs, end to end, on this machine.

1. The CLI and the example manifests (validated against the CRD schemas).
2. Seed 001 (Trusted Certificate Service) in the sandbox: TCSIssuer my-ca, the CA key in the token, a
   cert-manager Certificate approved and issued, a Kubernetes CSR approved and issued — each certificate
   verified with openssl against the CA.
3. Key provisioning: an issuer with selfSign false gets a CA made by openssl through its QuoteAttestation
   and `keyward provision-key`, and signs a Kubernetes CSR that openssl verifies against that CA.
Each step prints the command a user would type, then its output.
"""

from __future__ import annotations

import base64
import os
import shlex
import shutil
import socket
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


def provisioning_walkthrough(work: Path) -> None:
    banner("Key provisioning: an issuer whose CA is made outside keyward (spec.selfSign: false)")
    issuer = """apiVersion: tcs.intel.com/v1alpha1
kind: TCSIssuer
metadata:
  name: external-ca
  namespace: sandbox
spec:
  secretName: external-ca-cert
  selfSign: false
"""
    run("kubectl", "apply", "-f", "-", input_text=issuer)
    wait_until(
        "the QuoteAttestation",
        lambda: jsonpath("quoteattestation", "external-ca", "-n", "sandbox", "-o", "jsonpath={.spec.type}"),
    )
    run("kubectl", "get", "quoteattestations", "-n", "sandbox")
    wait_until(
        "the issuer waiting for its key",
        lambda: "Waiting"
        in jsonpath(
            "tcsissuer", "external-ca", "-n", "sandbox", "-o",
            "jsonpath={.status.conditions[?(@.type=='Ready')].message}",
        ),
    )  # fmt: skip
    run("kubectl", "get", "tcsissuers", "-n", "sandbox")
    print("The token's wrapping key, published for the key manager (SoftHSM2 has no attestation):")
    run(
        "kubectl", "get", "quoteattestation", "external-ca", "-n", "sandbox", "-o",
        "jsonpath={.spec.quoteVersion}{'\\n'}{.metadata.annotations.keyward\\.io/attestation}{'\\n'}",
    )  # fmt: skip
    public_key = base64.b64decode(
        jsonpath("quoteattestation", "external-ca", "-n", "sandbox", "-o", "jsonpath={.spec.publicKey}")
    )
    print(public_key.decode().strip())

    banner("A CA made by openssl, handed to the issuer with keyward provision-key")
    run(
        "openssl", "req", "-x509", "-nodes", "-newkey", "rsa:3072", "-keyout", "external-ca-key.pem",
        "-out", "external-ca.pem", "-days", "3650", "-subj", "/O=Example Corp/CN=Example External Root",
        cwd=work, quiet=True,
    )  # fmt: skip
    run(
        *keyward(
            "provision-key", "external-ca", "-n", "sandbox", "--ca-key", str(work / "external-ca-key.pem"),
            "--ca-cert", str(work / "external-ca.pem"), "--accept-unattested",
        )
    )  # fmt: skip
    wait_until(
        "external-ca Ready",
        lambda: jsonpath(
            "tcsissuer", "external-ca", "-n", "sandbox", "-o",
            "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
        )
        == "True",
    )  # fmt: skip
    run("kubectl", "get", "tcsissuers", "-n", "sandbox")
    shown = base64.b64decode(
        jsonpath("secret", "external-ca-cert", "-n", "sandbox", "-o", "jsonpath={.data.tls\\.crt}")
    )
    assert shown == (work / "external-ca.pem").read_bytes(), "the issuer's CA is the external one"
    print("Secret external-ca-cert holds the external CA's certificate; its key is now only in the token.")

    banner("A Kubernetes CSR signed by external-ca, verified against the external CA")
    request_b64 = base64.b64encode((work / "csr.pem").read_bytes()).decode()
    manifest = (
        (ROOT / "examples/tcs/csr.yaml")
        .read_text()
        .replace("${CSR_BASE64}", request_b64)
        .replace("name: test-csr", "name: external-csr")
        .replace("sandbox.my-ca", "sandbox.external-ca")
    )
    run("kubectl", "apply", "-f", "-", input_text=manifest)
    run("kubectl", "certificate", "approve", "external-csr")
    issued = wait_until(
        "the CSR certificate", lambda: jsonpath("csr", "external-csr", "-o", "jsonpath={.status.certificate}")
    )
    (work / "external-leaf.pem").write_bytes(base64.b64decode(issued))
    run("openssl", "verify", "-CAfile", str(work / "external-ca.pem"), str(work / "external-leaf.pem"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_est_server(work: Path) -> tuple[subprocess.Popen[bytes], Path, int]:
    banner("EST with no cluster at all: keyward est-server on a token-backed CA")
    state = STATE.parent / "demo-est"
    if state.exists():
        shutil.rmtree(state)
    port = free_port()
    print(f"$ keyward est-server --state-dir {state.relative_to(ROOT)} --listen 127.0.0.1:{port} &")
    log = open(work / "est-server.log", "wb")  # noqa: SIM115
    server = subprocess.Popen(
        keyward("est-server", "--state-dir", str(state), "--listen", f"127.0.0.1:{port}"),
        stdout=log,
        stderr=subprocess.STDOUT,
    )

    def listening() -> bool:
        with socket.socket() as probe:
            return (state / "tls-ca.pem").exists() and probe.connect_ex(("127.0.0.1", port)) == 0

    wait_until("the EST server", listening, timeout=60)
    print((work / "est-server.log").read_text().rstrip())
    run(
        "openssl",
        "req",
        "-new",
        "-nodes",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-keyout",
        "device.key",
        "-subj",
        "/CN=device-1.example",
        "-outform",
        "DER",
        "-out",
        "device.csr",
        cwd=work,
        quiet=True,
    )
    (work / "device.b64").write_bytes(base64.encodebytes((work / "device.csr").read_bytes()))
    password = (state / "est-password").read_text().strip()
    url = f"https://127.0.0.1:{port}/.well-known/est"
    print(
        f"$ curl --cacert tls-ca.pem -u est:$(cat est-password) -H 'Content-Type: application/pkcs10' "
        f"--data-binary @device.b64 {url}/simpleenroll | base64 -d | "
        "openssl pkcs7 -inform DER -print_certs"
    )
    body = subprocess.run(
        [
            "curl",
            "-sS",
            "--fail",
            "--cacert",
            str(state / "tls-ca.pem"),
            "-u",
            f"est:{password}",
            "-H",
            "Content-Type: application/pkcs10",
            "--data-binary",
            f"@{work / 'device.b64'}",
            f"{url}/simpleenroll",
        ],
        capture_output=True,
        check=True,
    ).stdout
    certs = subprocess.run(
        ["openssl", "pkcs7", "-inform", "DER", "-print_certs"],
        input=base64.b64decode(body),
        capture_output=True,
        check=True,
    ).stdout
    (work / "device.pem").write_bytes(certs)
    run("openssl", "verify", "-CAfile", str(state / "ca.pem"), str(work / "device.pem"))
    run("openssl", "x509", "-in", str(work / "device.pem"), "-noout", "-subject", "-issuer")
    return server, state, port


def est_issuer_walkthrough(work: Path, state: Path, port: int) -> None:
    banner("An EstIssuer in the sandbox enrolling with that EST server (the EST seed's example)")
    password = (state / "est-password").read_text().strip()
    # The explicit trust anchors: the server's TLS CA (to reach it) and the enrollment CA (what /cacerts
    # hands out), as `cat tls-ca.pem ca.pem | base64 -w0` gives them.
    anchors = (state / "tls-ca.pem").read_bytes() + (state / "ca.pem").read_bytes()
    ca_b64 = base64.b64encode(anchors).decode()
    run("kubectl", "create", "ns", "est-demo")
    print(
        "$ kubectl create secret generic est-cred -n est-demo --type=kubernetes.io/basic-auth "
        "--from-literal=username=est --from-literal=password=$(cat est-password)"
    )
    subprocess.run(
        [
            "kubectl",
            "create",
            "secret",
            "generic",
            "est-cred",
            "-n",
            "est-demo",
            "--type=kubernetes.io/basic-auth",
            "--from-literal=username=est",
            f"--from-literal=password={password}",
        ],
        capture_output=True,
        check=True,
    )
    issuer = f"""apiVersion: est.mitre.org/v1alpha1
kind: EstIssuer
metadata:
  name: est-demo
  namespace: est-demo
spec:
  host: 127.0.0.1
  port: {port}
  cacert: {ca_b64}
  secretName: est-cred
"""
    certificate = """apiVersion: cert-manager.io/v1
kind: Certificate
metadata:
  name: test-cert
  namespace: est-demo
spec:
  secretName: test-cert-tls
  commonName: example.com
  dnsNames: [example.com]
  usages: [server auth, client auth]
  privateKey: {rotationPolicy: Never}
  issuerRef: {group: est.mitre.org, kind: EstIssuer, name: est-demo}
"""
    run("kubectl", "apply", "-f", "-", input_text=issuer)
    wait_until(
        "the EstIssuer Ready",
        lambda: (
            jsonpath(
                "estissuer",
                "est-demo",
                "-n",
                "est-demo",
                "-o",
                "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
            )
            == "True"
        ),
    )
    run("kubectl", "get", "estissuers", "-n", "est-demo")
    run("kubectl", "apply", "-f", "-", input_text=certificate)
    for revision in ("1", "2"):
        request = wait_until(
            f"request revision {revision}",
            lambda r=revision: jsonpath(
                "certificaterequest",
                "-n",
                "est-demo",
                "-o",
                "jsonpath={.items[?(@.metadata.annotations.cert-manager\\.io/certificate-revision=="
                f"'{r}')].metadata.name}}",
            ),
        )
        run(*keyward("sandbox", "approve", request, "-n", "est-demo"))
        wait_until(
            f"Certificate revision {revision}",
            lambda r=revision: (
                jsonpath("certificate", "test-cert", "-n", "est-demo", "-o", "jsonpath={.status.revision}")
                == r
            ),
        )
        run("kubectl", "get", "estorders,certificates", "-n", "est-demo")
        chain = base64.b64decode(
            jsonpath("secret", "test-cert-tls", "-n", "est-demo", "-o", "jsonpath={.data.tls\\.crt}")
        )
        (work / f"test-cert-{revision}.pem").write_bytes(chain)
        run("openssl", "verify", "-CAfile", str(state / "ca.pem"), str(work / f"test-cert-{revision}.pem"))
        run(
            "openssl",
            "x509",
            "-in",
            str(work / f"test-cert-{revision}.pem"),
            "-noout",
            "-serial",
            "-ext",
            "subjectAltName,extendedKeyUsage",
        )
        if revision == "1":
            banner("Renewal: `keyward sandbox renew` (like `cmctl renew`) goes through EST simplereenroll")
            run(*keyward("sandbox", "renew", "test-cert", "-n", "est-demo"))
    print("The EST server's audit log, one line per certificate (the serving process's pid in brackets):")
    for line in (work / "est-server.log").read_text().splitlines():
        if "keyward.est.audit" in line:
            print("  " + line)


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
        provisioning_walkthrough(work)
        est_server, est_state, est_port = start_est_server(work)
        try:
            est_issuer_walkthrough(work, est_state, est_port)
        finally:
            est_server.terminate()
            est_server.wait(timeout=20)
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
