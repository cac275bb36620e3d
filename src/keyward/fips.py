"""FIPS mode: only approved algorithms, from OpenSSL's FIPS provider, in every OpenSSL of the process.

FIPS mode is asked for with ``--fips`` or the environment (``KEYWARD_FIPS=1``, or the EST seed's
``OPENSSL_FIPS=1``); it is a property of the process and of every process it starts (signing and serving
processes inherit the environment). It has two halves:

- **The cryptographic library.** keyward runs two OpenSSL libraries: the one ``cryptography`` bundles
  (X.509, keys, signatures) and the system's, under Python's ``ssl`` and ``hashlib`` (TLS, HTTP). Both
  must run OpenSSL's FIPS provider with the default properties ``fips=yes``, which OpenSSL's own
  configuration arranges (``OPENSSL_CONF``, and ``OPENSSL_MODULES`` for where the provider is).
  :func:`check` proves it at start: it asks each library, and uses each once.
- **keyward's own choices**, which the provider cannot see: the algorithms named in requests, PKCS#11
  mechanisms, HTTP Digest's hash. Each place asks :func:`enabled` and refuses with a reason naming FIPS.

One module file must not serve both libraries: the FIPS provider keeps the calls back into its OpenSSL
in globals, so a second OpenSSL loading the same ``fips.so`` takes them over, and the first library's
provider stops working. :func:`load_openssl` therefore lets the system library load the module named by
the configuration and gives ``cryptography``'s library its own copy of the same file (the provider's
integrity test checks the copy against the MAC ``openssl fipsinstall`` recorded). Without
``OPENSSL_MODULES`` each library loads ``fips.so`` from its own compiled-in module directory, as the
FIPS image arranges.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import re
import shutil
import ssl
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from keyward.errors import UserError

log = logging.getLogger("keyward.fips")

ENV_KEYWARD = "KEYWARD_FIPS"
ENV_OPENSSL = "OPENSSL_FIPS"  # the EST seed's switch
_TRUE = frozenset({"1", "true", "yes", "on"})

#: Hashes FIPS mode signs and verifies with (FIPS 180-4; SHA-1 and SHA-224 are not used for signatures).
APPROVED_SIGNATURE_HASHES = frozenset({"sha256", "sha384", "sha512"})
#: Curves of ECDSA keys FIPS mode certifies and creates (FIPS 186-5).
APPROVED_CURVES = frozenset({"secp256r1", "secp384r1"})
MIN_RSA_BITS = 2048
APPROVED_KEYS = "RSA of at least 2048 bits or ECDSA P-256/P-384"
_MODULE = "fips.so"
_CRYPTOGRAPHY_BINDING = "cryptography.hazmat.bindings._rust"

HOW_TO_PROVIDE = (
    "build OpenSSL's FIPS provider (`make fips`, or use the FIPS image) and point OPENSSL_CONF at a "
    "configuration that activates it with `default_properties = fips=yes` (OPENSSL_MODULES: the folder "
    "of fips.so); see README, FIPS mode"
)


def requested(env: Mapping[str, str] | None = None) -> bool:
    """Whether the environment asks for FIPS mode (``KEYWARD_FIPS`` or ``OPENSSL_FIPS``)."""
    env = os.environ if env is None else env
    return any((env.get(name) or "").strip().lower() in _TRUE for name in (ENV_KEYWARD, ENV_OPENSSL))


def enabled() -> bool:
    """Whether this process runs in FIPS mode (read from the environment it and its children share)."""
    return requested()


def enable() -> None:
    """Turn FIPS mode on for this process and the processes it starts (``--fips``)."""
    os.environ[ENV_KEYWARD] = "1"


def refusal(what: str, allowed: str) -> str:
    """The one wording of a FIPS refusal: what was asked, that FIPS mode forbids it, what it allows."""
    return f"{what}, which FIPS mode does not allow; use {allowed}"


def configure_tls(context: ssl.SSLContext, tls12_ciphers: str) -> None:
    """Set the TLS 1.2 cipher list of ``context``; in FIPS mode without ChaCha20-Poly1305 (not approved),
    leaving ECDHE/DHE with AES-GCM or AES-CBC (NIST SP 800-52 Rev. 2), and with P-256 as the one key
    exchange group (the FIPS provider of OpenSSL 3.0 still offers X25519, which SP 800-56A does not
    approve; Python's ssl sets a single group). TLS 1.3's ChaCha20 suite is not in the FIPS provider."""
    if not enabled():
        context.set_ciphers(tls12_ciphers)
        return
    context.set_ciphers(f"{tls12_ciphers}:!CHACHA20")
    context.set_ecdh_curve("prime256v1")


def random_bytes(count: int) -> bytes:
    """Random bytes: in FIPS mode from the FIPS provider's DRBG (OpenSSL's RAND_bytes), else the OS."""
    if enabled():
        return ssl.RAND_bytes(count)
    return os.urandom(count)


# --- loading OpenSSL -------------------------------------------------------------------------------------


def load_openssl() -> None:
    """Initialize both OpenSSL libraries of the process in FIPS mode, each with its own provider module.

    Must run before ``cryptography`` is first imported (``keyward`` does so at import, and the CLI for
    ``--fips``); later calls do nothing. See the module docstring for why the module is copied.
    """
    if _CRYPTOGRAPHY_BINDING in sys.modules:
        return
    import _hashlib  # noqa: F401 - the system OpenSSL reads OPENSSL_CONF and loads its provider now
    import _ssl  # noqa: F401

    modules = os.environ.get("OPENSSL_MODULES")
    module = Path(modules, _MODULE) if modules else None
    if module is None or not module.is_file():
        import cryptography.hazmat.bindings._rust  # noqa: F401 - its own module folder, or the check says

        return
    with tempfile.TemporaryDirectory(prefix="keyward-fips-") as private:
        shutil.copyfile(module, Path(private, _MODULE))
        os.environ["OPENSSL_MODULES"] = private
        try:
            from cryptography.hazmat.bindings._rust import openssl as rust_openssl

            rust_openssl.is_fips_enabled()  # the configuration is loaded: the copy is mapped
        finally:
            os.environ["OPENSSL_MODULES"] = modules or ""


# --- the start-up check ----------------------------------------------------------------------------------


class FipsUnavailable(UserError):
    """FIPS mode was asked for, but an OpenSSL of the process does not run the FIPS provider."""

    def __init__(self, problem: str) -> None:
        super().__init__(f"FIPS mode: {problem}", HOW_TO_PROVIDE)


@dataclass(frozen=True)
class FipsStatus:
    """What :func:`check` found: the provider and the two OpenSSL libraries it serves."""

    provider: str  # name of the FIPS provider, e.g. "OpenSSL FIPS Provider"
    version: str
    build: str
    drbg: str  # the DRBG behind RAND_bytes, e.g. "CTR-DRBG"
    cryptography_openssl: str
    ssl_openssl: str

    def describe(self) -> str:
        return (
            f"FIPS mode: {self.provider} {self.version} (build {self.build}) with default properties "
            f"fips=yes in cryptography's {self.cryptography_openssl} and Python ssl's {self.ssl_openssl}; "
            f"random numbers from its {self.drbg}"
        )


_status: FipsStatus | None = None


def last_status() -> FipsStatus | None:
    """What the last successful :func:`check` found (for the start-up log line), or None."""
    return _status


def check() -> FipsStatus:
    """Prove that both OpenSSL libraries run the FIPS provider with ``fips=yes`` default properties, and
    that each refuses MD5; ``FipsUnavailable`` (one line: what is missing, how to provide it) if not."""
    load_openssl()
    cryptography_openssl = _check_cryptography()
    system = _SystemOpenSSL.load()
    provider, version, build = system.fips_provider()
    drbg = system.check()
    global _status
    _status = FipsStatus(provider, version, build, drbg, cryptography_openssl, ssl.OPENSSL_VERSION)
    return _status


def _check_cryptography() -> str:
    from cryptography.exceptions import InternalError, UnsupportedAlgorithm
    from cryptography.hazmat.bindings._rust import openssl as rust_openssl
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    version = str(rust_openssl.openssl_version_text())
    if not rust_openssl.is_fips_enabled():
        raise FipsUnavailable(
            f"cryptography's {version} does not run with FIPS default properties (fips=yes), so it would "
            "use non-approved implementations"
        )
    try:
        key = ec.generate_private_key(ec.SECP256R1())
        signature = key.sign(b"keyward FIPS self-check", ec.ECDSA(hashes.SHA256()))
        key.public_key().verify(signature, b"keyward FIPS self-check", ec.ECDSA(hashes.SHA256()))
    except (InternalError, UnsupportedAlgorithm, ValueError) as exc:
        raise FipsUnavailable(
            f"cryptography's {version} asks for FIPS algorithms but no active FIPS provider serves them "
            f"({_first_line(exc)})"
        ) from None
    try:
        hashes.Hash(hashes.MD5())  # noqa: S303 - the probe that must fail
    except (InternalError, UnsupportedAlgorithm, ValueError):
        return version
    raise FipsUnavailable(f"cryptography's {version} still offers MD5, so it is not limited to the provider")


def _first_line(exc: BaseException) -> str:
    """OpenSSL's reason from a ``cryptography`` error, e.g. "CTR-DRBG: unsupported"."""
    text = str(exc)
    reason = re.search(r"error:[0-9A-F]+:[^:]*:[^:]*:([^:]+):", text)
    algorithm = re.search(r"Algorithm \(([^ :]+)", text)
    if reason is None:
        return (text.strip().splitlines() or [type(exc).__name__])[0][:200]
    return f"{algorithm.group(1)}: {reason.group(1)}" if algorithm else reason.group(1)


class _Param(ctypes.Structure):
    """OpenSSL's OSSL_PARAM."""

    _fields_ = (
        ("key", ctypes.c_char_p),
        ("data_type", ctypes.c_uint),
        ("data", ctypes.c_void_p),
        ("data_size", ctypes.c_size_t),
        ("return_size", ctypes.c_size_t),
    )


_UTF8_PTR = 6  # OSSL_PARAM_UTF8_PTR
_EACH_PROVIDER = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)


class _SystemOpenSSL:
    """The libcrypto under Python's ``ssl`` and ``hashlib``, asked through its C API (the modules have
    no Python call for providers)."""

    def __init__(self, library: ctypes.CDLL) -> None:
        self._lib = library
        for name, result, arguments in (
            ("OpenSSL_version", ctypes.c_char_p, [ctypes.c_int]),
            ("EVP_default_properties_is_fips_enabled", ctypes.c_int, [ctypes.c_void_p]),
            ("OSSL_PROVIDER_do_all", ctypes.c_int, [ctypes.c_void_p, _EACH_PROVIDER, ctypes.c_void_p]),
            ("OSSL_PROVIDER_get0_name", ctypes.c_char_p, [ctypes.c_void_p]),
            ("OSSL_PROVIDER_get_params", ctypes.c_int, [ctypes.c_void_p, ctypes.POINTER(_Param)]),
            ("RAND_get0_primary", ctypes.c_void_p, [ctypes.c_void_p]),
            ("EVP_RAND_CTX_get0_rand", ctypes.c_void_p, [ctypes.c_void_p]),
            ("EVP_RAND_get0_name", ctypes.c_char_p, [ctypes.c_void_p]),
            ("EVP_RAND_get0_provider", ctypes.c_void_p, [ctypes.c_void_p]),
        ):
            function = getattr(library, name)
            function.restype = result
            function.argtypes = arguments

    @classmethod
    def load(cls) -> _SystemOpenSSL:
        import _ssl  # noqa: F401 - maps the libcrypto it links

        path = _mapped_libcrypto() or ctypes.util.find_library("crypto") or "libcrypto.so.3"
        try:
            library = cls(ctypes.CDLL(path))
            version = (library._lib.OpenSSL_version(0) or b"").decode()
        except (OSError, AttributeError) as exc:
            raise FipsUnavailable(
                f"Python's ssl module does not use an OpenSSL 3 libcrypto keyward can ask ({exc})"
            ) from None
        if version != ssl.OPENSSL_VERSION:
            raise FipsUnavailable(
                f"Python's ssl module runs {ssl.OPENSSL_VERSION}, but the libcrypto found is {version}"
            )
        return library

    def fips_provider(self) -> tuple[str, str, str]:
        """Name, version and build of the active provider named ``fips``."""
        found: list[int] = []

        def each(provider: int | None, _data: int | None) -> int:
            if provider and self._lib.OSSL_PROVIDER_get0_name(provider) == b"fips":
                found.append(provider)
            return 1

        self._lib.OSSL_PROVIDER_do_all(None, _EACH_PROVIDER(each), None)
        if not found:
            raise FipsUnavailable(
                f"Python's ssl module ({ssl.OPENSSL_VERSION}) has no active FIPS provider "
                f"(OPENSSL_CONF={os.environ.get('OPENSSL_CONF') or 'unset'})"
            )
        values = [ctypes.c_char_p() for _ in range(3)]
        params = (_Param * 4)(
            *(
                _Param(
                    key, _UTF8_PTR, ctypes.cast(ctypes.byref(value), ctypes.c_void_p), ctypes.sizeof(value)
                )
                for key, value in zip((b"name", b"version", b"buildinfo"), values, strict=True)
            ),
            _Param(None, 0, None, 0, 0),
        )
        if not self._lib.OSSL_PROVIDER_get_params(found[0], params):
            raise FipsUnavailable("the FIPS provider does not tell its name and version")
        name, version, build = ((value.value or b"?").decode(errors="replace") for value in values)
        return name, version, build

    def check(self) -> str:
        """Default properties, MD5 refused, and the DRBG's name (it must come from the FIPS provider)."""
        import _hashlib

        if not self._lib.EVP_default_properties_is_fips_enabled(None) or not _hashlib.get_fips_mode():
            raise FipsUnavailable(
                f"Python's ssl module ({ssl.OPENSSL_VERSION}) does not run with FIPS default properties "
                "(fips=yes)"
            )
        try:
            _hashlib.new("md5")
        except ValueError:
            pass
        else:
            raise FipsUnavailable(f"Python's ssl module ({ssl.OPENSSL_VERSION}) still offers MD5")
        try:
            ssl.RAND_bytes(16)
            ssl.create_default_context()
        except ssl.SSLError as exc:
            raise FipsUnavailable(
                f"Python's ssl module ({ssl.OPENSSL_VERSION}) cannot use its FIPS provider ({exc.reason})"
            ) from None
        context = self._lib.RAND_get0_primary(None)
        rand = self._lib.EVP_RAND_CTX_get0_rand(context) if context else None
        provider = self._lib.EVP_RAND_get0_provider(rand) if rand else None
        if not provider or self._lib.OSSL_PROVIDER_get0_name(provider) != b"fips":
            raise FipsUnavailable("random numbers of Python's ssl module do not come from the FIPS provider")
        return (self._lib.EVP_RAND_get0_name(rand) or b"DRBG").decode()


def _mapped_libcrypto() -> str | None:
    """The path of the libcrypto mapped into this process (the one ``_ssl`` links; cryptography's
    OpenSSL is linked into its own extension and maps no libcrypto)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    for line in maps.splitlines():
        path = line.split(maxsplit=5)[5] if len(line.split(maxsplit=5)) == 6 else ""
        if "/libcrypto.so" in path:
            return path
    return None
