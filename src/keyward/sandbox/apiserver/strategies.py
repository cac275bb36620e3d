"""Per-resource write rules ("strategies", as kube-apiserver calls them).

The base strategy gives the status-subresource semantics every resource with ``status`` shares:
object writes keep the stored status, /status writes change only status. Secrets, config maps and
namespaces add the few rules of theirs that clients notice.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import TYPE_CHECKING, Any

from keyward.sandbox.apiserver.errors import FieldError, bad_request
from keyward.sandbox.apiserver.objects import Obj, clone, meta

if TYPE_CHECKING:
    from keyward.sandbox.apiserver.auth import UserInfo
    from keyward.sandbox.apiserver.operations import Cluster
    from keyward.sandbox.apiserver.resources import View

_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_CONFIG_KEY_RULE = (
    "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or "
    "'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"
)


class Strategy:
    """Defaults for any resource: plain CRUD plus the status subresource when the view declares it."""

    name_rule = "subdomain"  # see objects.name_problems: namespaces "label", services "dns1035", RBAC "path"

    def prepare_create(self, obj: Obj, view: View) -> None:
        if "status" in view.spec.subresources:
            obj.pop("status", None)

    def set_requester(self, obj: Obj, user: UserInfo) -> None:
        """Record who created the object, for the kinds that keep it (CSRs)."""

    def validate_create(self, obj: Obj, view: View) -> list[FieldError]:
        return []

    def prepare_update(self, new: Obj, old: Obj, subresource: str, view: View) -> Obj:
        """The object to store for a write of ``new`` over ``old`` through ``subresource``."""
        if subresource == "status":
            result = clone(old)
            status: Any = new.get("status")
            if status is None:
                result.pop("status", None)
            else:
                result["status"] = status
            return result
        if "status" in view.spec.subresources:
            _keep(new, old, "status")
        return new

    def validate_update(self, new: Obj, old: Obj, subresource: str, view: View) -> list[FieldError]:
        return []

    def on_stored(self, cluster: Cluster, obj: Obj, old: Obj | None) -> None:
        """Side effects after a create or update was stored (CRDs register their resource here)."""

    def on_removed(self, cluster: Cluster, obj: Obj) -> None:
        """Side effects after an object left the store."""


def _keep(new: Obj, old: Obj, key: str) -> None:
    if key in old:
        new[key] = clone(old[key])
    else:
        new.pop(key, None)


class KeyedDataStrategy(Strategy):
    """Secrets and ConfigMaps: key names, base64 values, ``stringData`` folding, ``immutable``."""

    def __init__(self, *, secret: bool) -> None:
        self.secret = secret

    @property
    def kind(self) -> str:
        return "Secret" if self.secret else "ConfigMap"

    def _normalize(self, obj: Obj) -> None:
        if self.secret:
            string_data = obj.pop("stringData", None)
            if isinstance(string_data, dict):
                data = obj.get("data")
                data = dict(data) if isinstance(data, dict) else {}
                for key, value in string_data.items():
                    data[key] = base64.b64encode(str(value).encode()).decode()
                obj["data"] = data
            obj.setdefault("type", "Opaque")
        for field in ("data",) if self.secret else ("binaryData",):
            for value in (obj.get(field) or {}).values():
                try:
                    base64.b64decode(value if isinstance(value, str) else "*", validate=True)
                except (binascii.Error, ValueError):
                    raise bad_request(
                        f'{self.kind} in version "v1" cannot be handled as a {self.kind}: '
                        f"illegal base64 data in {field}"
                    ) from None

    def prepare_create(self, obj: Obj, view: View) -> None:
        super().prepare_create(obj, view)
        self._normalize(obj)

    def prepare_update(self, new: Obj, old: Obj, subresource: str, view: View) -> Obj:
        self._normalize(new)
        return super().prepare_update(new, old, subresource, view)

    def validate_create(self, obj: Obj, view: View) -> list[FieldError]:
        errors: list[FieldError] = []
        for field in ("data", "binaryData"):
            for key in obj.get(field) or {}:
                if not _CONFIG_KEY.match(key) or len(key) > 253:
                    errors.append(
                        FieldError(
                            f"{field}[{key}]",
                            "Invalid",
                            value=key,
                            detail=_CONFIG_KEY_RULE,
                        )
                    )
        if self.secret and obj.get("type") == "kubernetes.io/tls":
            for key in ("tls.crt", "tls.key"):
                if key not in (obj.get("data") or {}):
                    errors.append(FieldError(f"data[{key}]", "Required"))
        return errors

    def validate_update(self, new: Obj, old: Obj, subresource: str, view: View) -> list[FieldError]:
        errors = self.validate_create(new, view)
        if self.secret and new.get("type") != old.get("type"):
            errors.append(FieldError("type", "Invalid", value=new.get("type"), detail="field is immutable"))
        if old.get("immutable") is True:
            if new.get("immutable") is not True:
                errors.append(
                    FieldError("immutable", "Forbidden", detail="field is immutable when `immutable` is set")
                )
            for field in ("data", "binaryData"):
                if (new.get(field) or {}) != (old.get(field) or {}):
                    errors.append(
                        FieldError(field, "Forbidden", detail="field is immutable when `immutable` is set")
                    )
        return errors


class NamespaceStrategy(Strategy):
    """Namespaces: DNS-label names, phase Active, the ``kubernetes`` finalizer, the name label."""

    name_rule = "label"

    def prepare_create(self, obj: Obj, view: View) -> None:
        obj["status"] = {"phase": "Active"}
        spec = obj.get("spec")
        obj["spec"] = {**(spec if isinstance(spec, dict) else {}), "finalizers": ["kubernetes"]}
        self._label(obj)

    def prepare_update(self, new: Obj, old: Obj, subresource: str, view: View) -> Obj:
        result = super().prepare_update(new, old, subresource, view)
        _keep(result, old, "spec")
        self._label(result)
        return result

    @staticmethod
    def _label(obj: Obj) -> None:
        metadata = meta(obj)
        labels: dict[str, Any] = dict(metadata.get("labels") or {})
        labels["kubernetes.io/metadata.name"] = metadata.get("name", "")
        metadata["labels"] = labels
