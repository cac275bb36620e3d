"""What can go wrong with the token, said so that an operator knows what to change.

Every error names the token (label and module) and the fix. None ever carries a PIN: messages are built
from labels, paths and PKCS#11 return-code names only.
"""

from __future__ import annotations

import pkcs11.exceptions as p11

from keyward.errors import UserError


class KeystoreError(UserError):
    """A problem with the PKCS#11 module, the token or a key in it."""


class ModuleLoadError(KeystoreError):
    """The PKCS#11 library is missing or is not a PKCS#11 module."""


class TokenNotFound(KeystoreError):
    """No token has the configured label, and none could be initialized."""


class WrongPin(KeystoreError):
    """The token refused the user PIN."""


class TokenFull(KeystoreError):
    """The token has no room left for another object (CKR_DEVICE_MEMORY)."""


class KeyNotFound(KeystoreError):
    """No CA key with that label is in the token (any more)."""


class KeyExists(KeystoreError):
    """A key with that label is already in the token."""


class KeyNotExtractable(KeystoreError):
    """The caller asked for private key material, which never leaves the token."""


class UnsupportedOperation(KeystoreError):
    """The token or keyward lacks the mechanism or parameter the caller asked for."""


class KeystoreClosed(KeystoreError):
    """The key store was closed; its keys can no longer sign."""


def token_error(exc: Exception, action: str, token: str) -> KeystoreError:
    """Turn a python-pkcs11 exception into a one-line error naming the token, the action and the fix.

    ``token`` describes the token (label and module); ``action`` completes "could not ...". Only the
    exception's class name is used: python-pkcs11 messages say nothing more, and this way no argument
    of the failed call (a PIN, say) can ever reach the message.
    """
    what = f"token {token} could not {action}"
    if isinstance(exc, p11.PinIncorrect):
        return WrongPin(
            f"token {token} refused the user PIN",
            "set userPin in the HSM config file (or KEYWARD_USER_PIN) to the token's user PIN",
        )
    if isinstance(exc, p11.PinLocked):
        return WrongPin(
            f"the user PIN of token {token} is locked after too many wrong tries",
            "unlock it with the SO PIN (pkcs11-tool --init-pin --login --login-type so) and fix userPin",
        )
    if isinstance(exc, p11.UserPinNotInitialized):
        return WrongPin(
            f"token {token} has no user PIN set",
            "set one with the SO PIN (pkcs11-tool --init-pin --login --login-type so)",
        )
    if isinstance(exc, p11.DeviceMemory):
        return TokenFull(
            f"{what}: the token is full (CKR_DEVICE_MEMORY)",
            "delete keys and certificates of issuers that no longer exist, or use a token with more room",
        )
    if isinstance(exc, p11.HostMemory):
        return KeystoreError(f"{what}: the PKCS#11 module ran out of memory", "give the operator more memory")
    if isinstance(exc, p11.TokenNotPresent | p11.DeviceRemoved):
        return TokenNotFound(f"{what}: the token is no longer present", "reconnect the HSM and retry")
    if isinstance(exc, p11.MechanismInvalid | p11.FunctionNotSupported | p11.MechanismParamInvalid):
        return UnsupportedOperation(
            f"{what}: the token does not support the mechanism ({type(exc).__name__})",
            "use a key type or token that supports it",
        )
    if isinstance(exc, p11.TokenWriteProtected):
        return KeystoreError(f"{what}: the token is write-protected", "make the token writable")
    return KeystoreError(
        f"{what} ({type(exc).__name__})", "check the token and the PKCS#11 module's log, then retry"
    )
