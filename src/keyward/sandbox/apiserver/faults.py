"""Fault injection: the unfriendly answers a real cluster gives now and then, on demand and repeatable.

A fault plan is a list of rules; each request is matched against them after authentication and
authorization (a fault never lets through what RBAC refuses), and the first rule that matches and
fires decides the answer. The grammar (``keyward sandbox --faults SPEC``, ``ApiServer(faults=SPEC)``)::

    SPEC    := RULE (";" RULE)*
    RULE    := EFFECT ["@" FILTER ("," FILTER)*]
    EFFECT  := "500"             a webhook failure: 500 InternalError, "Internal error occurred: failed
                                 calling webhook "webhook.cert-manager.io": ..." (cert-manager restarting)
             | "429" ["/" S]     429 TooManyRequests (API priority and fairness), with Retry-After: S
                                 seconds when S is given (none otherwise)
             | "403"             403 Forbidden worded as an RBAC denial of the request
             | "422"             422 Invalid for the object written
             | "delay=" S        the answer comes S seconds late (clients with shorter timeouts give up)
             | "cut-watch=" N    watches are cut (connection closed mid-stream) after N events
             | "watch-window=" N the server remembers only the last N events per resource, so a watch
                                 resumed from an older resourceVersion gets 410 Gone (no filters)
    FILTER  := "verb=" V("|"V)*         create, update, patch, delete, deletecollection, get, list, watch
             | "resource=" R["/"SUB]    e.g. certificaterequests/status (SUB "*" for any subresource)
             | "user=" U                the authenticated user name
             | "namespace=" NS
             | "first=" N               fire on the first N matching requests only
             | "every=" N               fire on every Nth matching request
             | "rate=" P ["," "seed=" S]  fire on a share P (0..1) of matching requests, seeded

Without a verb filter, 500/429/422/delay rules match writes (create, update, patch, delete,
deletecollection) and cut-watch rules match watches. Without first/every/rate a rule fires on every
match. ``first`` and ``every`` count matches per rule, so a test can assert exactly which writes fail.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from keyward.sandbox.apiserver.errors import ApiError, FieldError, invalid
from keyward.sandbox.apiserver.rbac import Attributes, denied

WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
WEBHOOK_FAILURE = (
    'failed calling webhook "webhook.cert-manager.io": failed to call webhook: Post '
    '"https://cert-manager-webhook.cert-manager.svc:443/validate?timeout=30s": dial tcp 10.96.0.10:443: '
    "connect: connection refused"
)
EFFECTS = ("500", "429", "403", "422", "delay", "cut-watch", "watch-window")


class FaultSpecError(ValueError):
    """A fault SPEC that cannot be parsed; the message says which part and what is expected."""


@dataclass
class FaultRule:
    effect: str
    text: str = ""
    retry_after: int | None = None
    seconds: float = 0.0
    count: int = 0  # cut-watch: events before the cut; watch-window: events remembered
    verbs: frozenset[str] | None = None
    resource: str | None = None
    subresource: str | None = None
    user: str | None = None
    namespace: str | None = None
    first: int | None = None
    every: int | None = None
    rate: float | None = None
    seed: int | None = None
    matched: int = 0
    fired: int = 0
    _random: random.Random = field(default_factory=random.Random, repr=False)

    def matches(self, attributes: Attributes) -> bool:
        verbs = self.verbs
        if verbs is None:
            verbs = frozenset({"watch"}) if self.effect == "cut-watch" else WRITE_VERBS
        if attributes.verb not in verbs:
            return False
        if self.resource is not None and attributes.resource != self.resource:
            return False
        if (
            self.subresource is not None
            and self.subresource != "*"
            and attributes.subresource != self.subresource
        ):
            return False
        if self.user is not None and attributes.user.name != self.user:
            return False
        return self.namespace is None or attributes.namespace == self.namespace

    def fires(self) -> bool:
        """Count one match; True when this one is to fail."""
        self.matched += 1
        if self.first is not None:
            hit = self.matched <= self.first
        elif self.every is not None:
            hit = self.matched % self.every == 0
        elif self.rate is not None:
            hit = self._random.random() < self.rate
        else:
            hit = True
        if hit:
            self.fired += 1
        return hit


def _number(text: str, what: str, rule: str, kind: type[int] | type[float] = int) -> Any:
    try:
        value = kind(text)
    except ValueError:
        raise FaultSpecError(f"fault rule {rule!r}: {what} must be a number, got {text!r}") from None
    if value < 0:
        raise FaultSpecError(f"fault rule {rule!r}: {what} must not be negative")
    return value


def parse_rule(text: str) -> FaultRule:
    effect_text, _, filters = text.strip().partition("@")
    effect_text = effect_text.strip()
    name, _, argument = effect_text.replace("/", "=", 1).partition("=")
    if name not in EFFECTS:
        raise FaultSpecError(
            f"fault rule {text!r}: unknown effect {name!r}; use one of 500, 429[/SECONDS], 403, 422, "
            "delay=SECONDS, cut-watch=EVENTS, watch-window=EVENTS"
        )
    rule = FaultRule(name, text=text.strip())
    if name == "429" and argument:
        rule.retry_after = _number(argument, "Retry-After", text)
    elif name == "delay":
        rule.seconds = _number(argument, "delay", text, float)
    elif name in ("cut-watch", "watch-window"):
        rule.count = _number(argument, name, text)
    elif argument:
        raise FaultSpecError(f"fault rule {text!r}: effect {name} takes no value")
    for item in [f for f in filters.split(",") if f.strip()]:
        key, equals, value = item.strip().partition("=")
        if not equals or not value:
            raise FaultSpecError(f"fault rule {text!r}: filter {item!r} must be KEY=VALUE")
        if key == "verb":
            rule.verbs = frozenset(value.split("|"))
        elif key == "resource":
            rule.resource, _, sub = value.partition("/")
            rule.subresource = sub if sub else ""
        elif key in ("user", "namespace"):
            setattr(rule, key, value)
        elif key in ("first", "every", "seed"):
            setattr(rule, key, _number(value, key, text))
        elif key == "rate":
            rule.rate = _number(value, "rate", text, float)
            if rule.rate > 1:
                raise FaultSpecError(f"fault rule {text!r}: rate is a share between 0 and 1")
        else:
            raise FaultSpecError(
                f"fault rule {text!r}: unknown filter {key!r}; use verb, resource, user, namespace, first, "
                "every, rate or seed"
            )
    if rule.every == 0:
        raise FaultSpecError(f"fault rule {text!r}: every must be at least 1")
    if name == "watch-window" and (filters.strip() or rule.count < 1):
        raise FaultSpecError(f"fault rule {text!r}: watch-window=N takes N >= 1 and no filters")
    rule._random = random.Random(rule.seed)  # noqa: S311 (deterministic test faults, not cryptography)
    return rule


def parse(spec: str) -> list[FaultRule]:
    return [parse_rule(part) for part in spec.split(";") if part.strip()]


@dataclass
class Injected:
    rule: str
    verb: str
    resource: str
    subresource: str
    namespace: str
    name: str


class FaultPlan:
    """The rules in force; ``injected`` lists every fault answered, in order."""

    def __init__(self, spec: str = "") -> None:
        self.rules: list[FaultRule] = []
        self.injected: list[Injected] = []
        if spec:
            self.add(spec)

    def add(self, spec: str) -> list[FaultRule]:
        rules = parse(spec)
        self.rules.extend(rules)
        return rules

    def clear(self) -> None:
        self.rules.clear()

    @property
    def watch_window(self) -> int | None:
        windows = [r.count for r in self.rules if r.effect == "watch-window"]
        return min(windows) if windows else None

    def pick(self, attributes: Attributes) -> FaultRule | None:
        """The rule that fires for this request, if any (counting matches as it goes)."""
        for rule in self.rules:
            if rule.effect == "watch-window" or not rule.matches(attributes):
                continue
            if rule.fires():
                self.injected.append(
                    Injected(
                        rule.text,
                        attributes.verb,
                        attributes.resource,
                        attributes.subresource,
                        attributes.namespace,
                        attributes.name,
                    )
                )
                return rule
        return None


def failure(rule: FaultRule, attributes: Attributes, kind: str) -> tuple[ApiError, dict[str, str]]:
    """The error (and headers) a firing 500/429/403/422 rule answers with."""
    if rule.effect == "500":
        return (
            ApiError(
                500,
                "InternalError",
                f"Internal error occurred: {WEBHOOK_FAILURE}",
                {"causes": [{"message": WEBHOOK_FAILURE}]},
            ),
            {},
        )
    if rule.effect == "429":
        details: dict[str, Any] = {}
        headers: dict[str, str] = {}
        if rule.retry_after is not None:
            details["retryAfterSeconds"] = rule.retry_after
            headers["Retry-After"] = str(rule.retry_after)
        return ApiError(
            429, "TooManyRequests", "Too many requests, please try again later.", details
        ), headers
    if rule.effect == "403":
        return denied(attributes, ""), {}
    return (
        invalid(
            attributes.api_group,
            kind,
            attributes.name,
            [
                FieldError(
                    "metadata", "Invalid", value=attributes.name, detail="refused by the sandbox's fault plan"
                )
            ],
        ),
        {},
    )
