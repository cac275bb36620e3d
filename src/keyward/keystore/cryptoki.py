"""The few PKCS#11 calls python-pkcs11 0.10 does not offer, made through the module's function list.

* C_Initialize with CKF_OS_LOCKING_OK. python-pkcs11 passes NULL, which tells the module that no two
  threads will call it at once; SoftHSM2 then turns its locks off, and signing from the worker pool
  fails or crashes the process. With CKF_OS_LOCKING_OK the module locks its shared state itself.
* C_Finalize, to switch a SoftHSM2 module to another store.
* C_InitToken, to create a missing token. Calling the module in-process (rather than a vendor tool such
  as ``softhsm2-util --init-token``) works for every module and keeps the SO PIN off command lines, where
  other users could read it in the process table.

``dlopen`` of the same path returns the library python-pkcs11 loaded, so these reach the same module
instance.
"""

from __future__ import annotations

import ctypes

# CK_FUNCTION_LIST starts with a CK_VERSION and then the function pointers in this order (PKCS#11 2.40,
# section 5.16); only the entries up to C_InitToken are needed.
_FUNCTIONS_BEFORE_INIT_TOKEN = (
    "C_Initialize",
    "C_Finalize",
    "C_GetInfo",
    "C_GetFunctionList",
    "C_GetSlotList",
    "C_GetSlotInfo",
    "C_GetTokenInfo",
    "C_GetMechanismList",
    "C_GetMechanismInfo",
)
_LABEL_LENGTH = 32
CKR_OK = 0


class _Version(ctypes.Structure):
    _fields_ = [("major", ctypes.c_ubyte), ("minor", ctypes.c_ubyte)]


class _FunctionListHead(ctypes.Structure):
    _fields_ = [
        ("version", _Version),
        *[(name, ctypes.c_void_p) for name in _FUNCTIONS_BEFORE_INIT_TOKEN],
        ("C_InitToken", ctypes.c_void_p),
    ]


class _InitializeArgs(ctypes.Structure):
    """CK_C_INITIALIZE_ARGS: no mutex callbacks, and permission to use the operating system's locks."""

    _fields_ = [
        ("CreateMutex", ctypes.c_void_p),
        ("DestroyMutex", ctypes.c_void_p),
        ("LockMutex", ctypes.c_void_p),
        ("UnlockMutex", ctypes.c_void_p),
        ("flags", ctypes.c_ulong),
        ("pReserved", ctypes.c_void_p),
    ]


CKF_OS_LOCKING_OK = 0x2
CKR_CRYPTOKI_ALREADY_INITIALIZED = 0x191
_Initialize = ctypes.CFUNCTYPE(ctypes.c_ulong, ctypes.c_void_p)
_InitToken = ctypes.CFUNCTYPE(
    ctypes.c_ulong, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p
)


def padded_label(label: str) -> bytes:
    """The 32-byte, blank-padded CK_UTF8CHAR label C_InitToken takes."""
    raw = label.encode("utf-8")
    if len(raw) > _LABEL_LENGTH:
        raise ValueError(f"token label {label!r} is longer than {_LABEL_LENGTH} bytes: choose a shorter one")
    return raw.ljust(_LABEL_LENGTH, b" ")


def _function(module_path: str, name: str) -> int:
    """The address of function ``name`` in the module's CK_FUNCTION_LIST."""
    function_list = ctypes.POINTER(_FunctionListHead)()
    rv = ctypes.CDLL(module_path).C_GetFunctionList(ctypes.byref(function_list))
    if rv != CKR_OK:
        raise OSError(f"C_GetFunctionList returned {rv_name(rv)}")
    address: int | None = getattr(function_list.contents, name)
    if not address:
        raise NotImplementedError(f"the module's function list has no {name}")
    return address


def initialize_for_threads(module_path: str) -> int:
    """C_Initialize allowing OS locking; returns the PKCS#11 return value."""
    arguments = _InitializeArgs(flags=CKF_OS_LOCKING_OK)
    return int(_Initialize(_function(module_path, "C_Initialize"))(ctypes.addressof(arguments)))


def finalize(module_path: str) -> int:
    """C_Finalize: the module forgets every session and login; returns the PKCS#11 return value."""
    return int(_Initialize(_function(module_path, "C_Finalize"))(None))


def init_token(module_path: str, slot_id: int, so_pin: str, label: str) -> int:
    """Initialize the token in ``slot_id``; returns the PKCS#11 return value (0 = CKR_OK)."""
    pin = so_pin.encode("utf-8")
    return int(_InitToken(_function(module_path, "C_InitToken"))(slot_id, pin, len(pin), padded_label(label)))


#: Names of the return values C_InitToken is likely to give, for readable error messages.
RV_NAMES = {
    0x03: "CKR_SLOT_ID_INVALID",
    0x05: "CKR_GENERAL_ERROR",
    0x0A: "CKR_CANT_LOCK",
    0x30: "CKR_DEVICE_ERROR",
    0x31: "CKR_DEVICE_MEMORY",
    0x32: "CKR_DEVICE_REMOVED",
    0x54: "CKR_FUNCTION_NOT_SUPPORTED",
    0xA0: "CKR_PIN_INCORRECT",
    0xA1: "CKR_PIN_INVALID",
    0xA2: "CKR_PIN_LEN_RANGE",
    0xA4: "CKR_PIN_LOCKED",
    0xB6: "CKR_SESSION_EXISTS",
    0xE0: "CKR_TOKEN_NOT_PRESENT",
    0xE2: "CKR_TOKEN_WRITE_PROTECTED",
    0x190: "CKR_CRYPTOKI_NOT_INITIALIZED",
    0x191: "CKR_CRYPTOKI_ALREADY_INITIALIZED",
}


def rv_name(rv: int) -> str:
    return RV_NAMES.get(rv, f"CKR 0x{rv:x}")
