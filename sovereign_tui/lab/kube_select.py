"""Label and field selectors, and continue tokens, as the Kubernetes API parses them."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import orjson

# --- selectors ---------------------------------------------------------------------------------


class SelectorError(ValueError):
    pass


@dataclass(frozen=True)
class _Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!"
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if self.op in ("=", "in"):
            return present and labels[self.key] in self.values
        return not present or labels[self.key] not in self.values  # "!=", "notin"


def _split_top(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


@dataclass(frozen=True)
class LabelSelector:
    requirements: tuple[_Requirement, ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> LabelSelector:
        if not text:
            return cls()
        reqs = []
        for part in _split_top(text):
            words = part.split()
            if len(words) >= 2 and words[1] in ("in", "notin"):
                rest = part.split(None, 2)[2].strip() if len(words) > 2 else ""
                if not (rest.startswith("(") and rest.endswith(")")):
                    raise SelectorError(f"unable to parse requirement: {part!r}: values must be in ( )")
                vals = frozenset(v.strip() for v in rest[1:-1].split(",") if v.strip())
                reqs.append(_Requirement(words[0], words[1], vals))
            elif "!=" in part:
                k, v = part.split("!=", 1)
                reqs.append(_Requirement(k.strip(), "!=", frozenset([v.strip()])))
            elif "=" in part:
                k, v = part.split("==", 1) if "==" in part else part.split("=", 1)
                reqs.append(_Requirement(k.strip(), "=", frozenset([v.strip()])))
            elif part.startswith("!"):
                reqs.append(_Requirement(part[1:].strip(), "!"))
            else:
                reqs.append(_Requirement(part, "exists"))
        for r in reqs:
            if not r.key or " " in r.key:
                raise SelectorError(f"unable to parse requirement: invalid label key {r.key!r}")
        return cls(tuple(reqs))

    @classmethod
    def from_match_labels(cls, match: Mapping[str, str]) -> LabelSelector:
        return cls(tuple(_Requirement(k, "=", frozenset([v])) for k, v in match.items()))

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)


@dataclass(frozen=True)
class FieldSelector:
    terms: tuple[tuple[str, bool, str], ...] = ()
    """(field, equal?, value) terms, all of which must hold."""

    @classmethod
    def parse(cls, text: str | None, supported: Iterable[str]) -> FieldSelector:
        if not text:
            return cls()
        allowed = set(supported)
        terms = []
        for part in _split_top(text):
            if "!=" in part:
                k, v = part.split("!=", 1)
                eq = False
            elif "==" in part:
                k, v = part.split("==", 1)
                eq = True
            elif "=" in part:
                k, v = part.split("=", 1)
                eq = True
            else:
                raise SelectorError(f"invalid selector: '{part}'; can't understand '{part}'")
            k = k.strip()
            if k not in allowed:
                raise SelectorError(f"field label not supported: {k}")
            terms.append((k, eq, v.strip()))
        return cls(tuple(terms))

    def matches(self, fields: Mapping[str, str]) -> bool:
        return all((fields.get(k, "") == v) == eq for k, eq, v in self.terms)

    def indexed(self, index: str | None) -> str | None:
        """The value this selector pins `index` to, if it does."""
        if index is None:
            return None
        for k, eq, v in self.terms:
            if k == index and eq:
                return v
        return None


# --- continue tokens ---------------------------------------------------------------------------


def encode_continue(rv: int, last_key: str) -> str:
    body = orjson.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": last_key + "\x00"})
    return base64.urlsafe_b64encode(body).rstrip(b"=").decode()


def decode_continue(token: str) -> tuple[int, str]:
    try:
        data = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        rv, start = int(data["rv"]), str(data["start"])
        if data.get("v") != "meta.k8s.io/v1" or not start.endswith("\x00"):
            raise ValueError("unknown token version")
    except (ValueError, KeyError, TypeError, binascii.Error, orjson.JSONDecodeError) as exc:
        raise ValueError(f"invalid continue token: {exc}") from exc
    return rv, start[:-1]
