"""How close (b) can come to (a) on this machine: RSA certificates per raw token signature, in one
thread with the token in this process (no signing process, so no round trip), with and without the two
public-key verifications pki makes per certificate.

    .venv/bin/python scripts/pki_ceiling.py [ROUNDS [RSA_BITS]]

RSA_BITS (default 3072, the TCSIssuer default) sets the CA key: a bigger key makes the token's signature
slower while pki's work stays the same, as a slower token would.

Each round times 250 of each, interleaved call by call, so that the VM's changes of speed hit all alike:
- ``raw``: one C_Sign over a TBS-sized message, as (a) does;
- ``pki``: ``load_csr`` + ``issue_certificate``, as (b) does;
- ``no final check``: the same without verifying the issued certificate against the CA;
- ``no checks``: the same without that and without the proof of possession (the CSR's own signature).

The last two are not things keyward may do (the issue requires the proof of possession, and the final
check is what catches a token that signs wrongly); they show the ceiling of the ratio were both free.
An analysis tool: it swaps ``CertificateAuthority.verify_issued`` for a no-op around its own calls.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography import x509

from keyward.bench.csrs import leaf_csr_pem
from keyward.bench.pki import bench_ca, issue_one
from keyward.bench.tokens import raw_signature
from keyward.keystore import KeySpec, TokenKeyStore, create_softhsm_store
from keyward.pki import issue
from keyward.pki.profile import IssuerPolicy, RequestProfile

CALLS = 250


def main(rounds: int, bits: int) -> None:
    state = Path(tempfile.mkdtemp(prefix="keyward-ceiling-"))
    store = TokenKeyStore.open(create_softhsm_store(state, token_label="ceiling"), workers=1)  # noqa: S106
    try:
        key = store.generate_key("ca", KeySpec("RSA", bits))
        ca, csr_pem, policy, message = (
            bench_ca(key, "ca"),
            leaf_csr_pem("leaf.test"),
            IssuerPolicy(),
            os.urandom(1024),
        )
        verify = issue.CertificateAuthority.verify_issued

        def unchecked(check_possession: bool) -> None:
            issue.CertificateAuthority.verify_issued = lambda self, certificate: None  # type: ignore[method-assign]
            try:
                if check_possession:
                    issue_one(ca, csr_pem, policy)
                else:
                    csr = x509.load_pem_x509_csr(csr_pem)
                    issue.issue_certificate(csr, RequestProfile(), ca, policy, signature_checked=True)
            finally:
                issue.CertificateAuthority.verify_issued = verify  # type: ignore[method-assign]

        jobs: dict[str, Callable[[], object]] = {
            "raw": lambda: raw_signature(key, message),
            "pki": lambda: issue_one(ca, csr_pem, policy),
            "no final check": lambda: unchecked(True),
            "no checks": lambda: unchecked(False),
        }
        for _ in range(rounds):
            seconds = dict.fromkeys(jobs, 0.0)
            for _ in range(CALLS):
                for name, job in jobs.items():
                    started = time.perf_counter()
                    job()
                    seconds[name] += time.perf_counter() - started
            ratios = "  ".join(
                f"{name} {seconds['raw'] / seconds[name]:.3f}" for name in jobs if name != "raw"
            )
            print(f"raw {seconds['raw'] / CALLS * 1000:.2f} ms   (b)/(a): {ratios}", flush=True)
    finally:
        store.close()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 4, int(sys.argv[2]) if len(sys.argv) > 2 else 3072)
