"""PKCS#11 object templates for CA keys and certificates, and reading public keys back from objects.

The templates spell out every protection attribute rather than relying on module defaults, which differ
between tokens: a CA key must be a token object, private, sensitive and never extractable everywhere.
Beyond that, a private key can do exactly one thing, and nobody can change that afterwards, not even a
holder of the user PIN:

* CKA_ALLOWED_MECHANISMS names the one mechanism the key serves (``signing.SIGNATURE_MECHANISMS`` for
  CA keys, CKM_RSA_PKCS_OAEP for the unwrapping key), so a raw CKM_RSA_X_509 operation, which would
  decrypt with the key whatever its CKA_DECRYPT says, is refused by the token;
* CKA_SIGN_RECOVER false: no signature with message recovery, another raw use of an RSA key;
* CKA_COPYABLE false: no C_CopyObject into a copy with other attributes;
* CKA_MODIFIABLE false: no C_SetAttributeValue turning any of this (or CKA_DECRYPT, CKA_DERIVE) back on.
  It comes last in the template: SoftHSM2 applies an unwrap template in order and refuses every
  attribute after CKA_MODIFIABLE false as read-only. The module cannot set it to false later
  (CKR_ATTRIBUTE_READ_ONLY), so keys are made under their final label (see ``TokenKeyStore.create_ca``).

CKA_ALLOWED_MECHANISMS is an array attribute that python-pkcs11 0.10 cannot pack; sessions opened with
``ATTRIBUTES`` can.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from typing import Any

from asn1crypto import core, keys
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pkcs11 import DEFAULT, Attribute, CertificateType, Mechanism, ObjectClass
from pkcs11.attributes import AttributeMapper

KEY_ID_BYTES = 16

#: Capability attributes that python-pkcs11's templates set but a private/public key must not carry.
_NOT_FOR_PRIVATE_KEYS = {Attribute.ENCRYPT: DEFAULT, Attribute.VERIFY: DEFAULT, Attribute.WRAP: DEFAULT}
#: A CK_MECHANISM_TYPE: an unsigned long in the platform's byte order, as CK_ULONG arrays are packed.
_MECHANISM_TYPE = struct.Struct("L")


def _pack_mechanisms(mechanisms: Iterable[Mechanism]) -> bytes:
    return b"".join(_MECHANISM_TYPE.pack(int(mechanism)) for mechanism in mechanisms)


def _unpack_mechanisms(value: bytes) -> list[Mechanism]:
    return [Mechanism(number) for (number,) in _MECHANISM_TYPE.iter_unpack(value)]


def _attribute_mapper() -> AttributeMapper:
    mapper = AttributeMapper()
    mapper.register_handler(Attribute.ALLOWED_MECHANISMS, _pack_mechanisms, _unpack_mechanisms)
    return mapper


#: python-pkcs11's attribute packing plus CKA_ALLOWED_MECHANISMS (a list of ``Mechanism``).
ATTRIBUTES = _attribute_mapper()


def new_key_id() -> bytes:
    """A random CKA_ID: unique without coordination, so two stores never pick the same one."""
    return os.urandom(KEY_ID_BYTES)


def private_key_template(
    label: str, key_id: bytes, mechanism: Mechanism, *, sign: bool = True, unwrap: bool = False
) -> dict[Attribute, Any]:
    """A persistent, private, sensitive, never-extractable, unchangeable private key that can sign (or
    unwrap) with ``mechanism`` and nothing else."""
    return {
        Attribute.CLASS: ObjectClass.PRIVATE_KEY,
        Attribute.TOKEN: True,
        Attribute.PRIVATE: True,
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: False,
        Attribute.SIGN: sign,
        Attribute.SIGN_RECOVER: False,
        Attribute.UNWRAP: unwrap,
        Attribute.DECRYPT: False,
        Attribute.DERIVE: False,
        Attribute.LABEL: label,
        Attribute.ID: key_id,
        Attribute.COPYABLE: False,
        Attribute.ALLOWED_MECHANISMS: [mechanism],
        **_NOT_FOR_PRIVATE_KEYS,
        Attribute.MODIFIABLE: False,  # last: see the module docstring
    }


def public_key_template(
    label: str, key_id: bytes, *, verify: bool = True, wrap: bool = False
) -> dict[Attribute, Any]:
    """The persistent public half, readable without login, with the private key's label and id. It stays
    modifiable: a CA's public key carries the pending label until its certificate is stored."""
    return {
        Attribute.CLASS: ObjectClass.PUBLIC_KEY,
        Attribute.TOKEN: True,
        Attribute.PRIVATE: False,
        Attribute.VERIFY: verify,
        Attribute.WRAP: wrap,
        Attribute.ENCRYPT: False,
        Attribute.LABEL: label,
        Attribute.ID: key_id,
    }


def certificate_template(label: str, key_id: bytes, certificate: x509.Certificate) -> dict[Attribute, Any]:
    """An X.509 certificate object carrying the DER and the attributes tools use to match it to its key."""
    return {
        Attribute.CLASS: ObjectClass.CERTIFICATE,
        Attribute.CERTIFICATE_TYPE: CertificateType.X_509,
        Attribute.TOKEN: True,
        Attribute.PRIVATE: False,
        Attribute.LABEL: label,
        Attribute.ID: key_id,
        Attribute.SUBJECT: certificate.subject.public_bytes(),
        Attribute.ISSUER: certificate.issuer.public_bytes(),
        Attribute.SERIAL_NUMBER: core.Integer(certificate.serial_number).dump(),
        Attribute.VALUE: certificate.public_bytes(serialization.Encoding.DER),
    }


def ec_parameters(curve: ec.EllipticCurve) -> bytes:
    """CKA_EC_PARAMS for a named curve: the DER of its OID (ANSI X9.62 ECParameters)."""
    der: bytes = keys.ECDomainParameters(name="named", value=keys.NamedCurve.unmap(curve.name)).dump()
    return der


def curve_of(ec_params: bytes) -> ec.EllipticCurve:
    """The named curve a CKA_EC_PARAMS value names."""
    parameters = keys.ECDomainParameters.load(ec_params)
    if parameters.name != "named":
        raise ValueError("the key's EC parameters are explicit, not a named curve")
    oid = x509.ObjectIdentifier(parameters.chosen.dotted)
    return ec.get_curve_for_oid(oid)()


def rsa_public_key(key_object: Any) -> rsa.RSAPublicKey:
    """The RSA public key of a public or private key object (modulus and exponent are public)."""
    modulus = int.from_bytes(key_object[Attribute.MODULUS], "big")
    exponent = int.from_bytes(key_object[Attribute.PUBLIC_EXPONENT], "big")
    return rsa.RSAPublicNumbers(exponent, modulus).public_key()


def ec_public_key(curve: ec.EllipticCurve, ec_point: bytes) -> ec.EllipticCurvePublicKey:
    """The EC public key of a CKA_EC_POINT: DER OCTET STRING per the standard, raw point on some tokens."""
    point = ec_point
    if ec_point[:1] == b"\x04" and len(ec_point) != 1 + 2 * ((curve.key_size + 7) // 8):
        point = core.OctetString.load(ec_point).native
    return ec.EllipticCurvePublicKey.from_encoded_point(curve, point)
