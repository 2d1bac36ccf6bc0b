"""PATCH bodies as the Kubernetes API applies them: JSON merge patch (RFC 7386), strategic merge
patch (merge patch plus merge keys for the lists that have them, and `$patch: delete`), and JSON
patch (RFC 6902). Server-side apply is not served (415)."""

from __future__ import annotations

import copy
from typing import Any

from sovereign_tui.lab.kube_store import KubeError, Obj

MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
MERGE_KEYS = {"conditions": "type", "containers": "name", "ownerReferences": "uid", "addresses": "type"}
"""Lists a strategic merge patch merges element by element, by this key (as the Go types declare)."""


def apply_patch(obj: Obj, patch: Any, content_type: str) -> Obj:
    kind = content_type.split(";")[0].strip().lower()
    if kind == JSON_PATCH:
        if not isinstance(patch, list):
            raise KubeError(
                400, "BadRequest", "json: cannot unmarshal object into Go value of type jsonpatch.Patch"
            )
        return _json_patch(obj, patch)
    if kind not in (MERGE, STRATEGIC):
        raise KubeError(
            415,
            "UnsupportedMediaType",
            f"the body of the request was in an unknown format - "
            f"accepted media types include: {JSON_PATCH}, {MERGE}, {STRATEGIC}",
        )
    if not isinstance(patch, dict):
        raise KubeError(
            400, "BadRequest", "json: cannot unmarshal array into Go value of type map[string]interface {}"
        )
    out = _merge(obj, patch, strategic=kind == STRATEGIC)
    if not isinstance(out, dict):
        raise KubeError(422, "Invalid", "the patch does not produce an object")
    return out


def _merge(target: Any, patch: Any, strategic: bool, key: str = "") -> Any:
    if not isinstance(patch, dict):
        if strategic and isinstance(patch, list) and isinstance(target, list) and key in MERGE_KEYS:
            return _merge_list(target, patch, MERGE_KEYS[key])
        return copy.deepcopy(patch)
    if strategic and patch.get("$patch") == "delete":
        return None
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if strategic and k.startswith("$"):
            continue
        if v is None:
            out.pop(k, None)
            continue
        merged = _merge(out.get(k), v, strategic, k)
        if merged is None:
            out.pop(k, None)
        else:
            out[k] = merged
    return out


def _merge_list(target: list[Any], patch: list[Any], merge_key: str) -> list[Any]:
    out = [copy.deepcopy(x) for x in target]
    for item in patch:
        if not isinstance(item, dict) or merge_key not in item:
            out.append(copy.deepcopy(item))
            continue
        pos = next(
            (i for i, x in enumerate(out) if isinstance(x, dict) and x.get(merge_key) == item[merge_key]),
            None,
        )
        if item.get("$patch") == "delete":
            if pos is not None:
                del out[pos]
        elif pos is None:
            out.append(_merge({}, item, True))
        else:
            out[pos] = _merge(out[pos], item, True)
    return out


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise KubeError(422, "Invalid", f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, parts: list[str], path: str) -> tuple[Any, str]:
    cur = doc
    for p in parts[:-1]:
        try:
            cur = cur[int(p)] if isinstance(cur, list) else cur[p]
        except (KeyError, IndexError, ValueError, TypeError):
            raise KubeError(422, "Invalid", f"doc is missing path: {path!r}") from None
    return cur, parts[-1]


def _json_patch(obj: Obj, ops: list[Any]) -> Obj:
    doc = copy.deepcopy(obj)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise KubeError(400, "BadRequest", f"invalid JSON patch operation: {op!r}")
        kind, path = op["op"], op["path"]
        parts = _pointer(path)
        if not parts:
            raise KubeError(422, "Invalid", "replacing the whole object is not supported")
        if kind in ("move", "copy"):
            src_parent, src_key = _parent(doc, _pointer(op.get("from", "")), op.get("from", ""))
            value = _get(src_parent, src_key, op.get("from", ""))
            if kind == "move":
                _remove(src_parent, src_key, op.get("from", ""))
            kind, op = "add", {**op, "value": copy.deepcopy(value)}
        parent, key = _parent(doc, parts, path)
        if kind == "add":
            if isinstance(parent, list):
                parent.insert(len(parent) if key == "-" else int(key), copy.deepcopy(op.get("value")))
            else:
                parent[key] = copy.deepcopy(op.get("value"))
        elif kind == "remove":
            _remove(parent, key, path)
        elif kind == "replace":
            _get(parent, key, path)
            parent[int(key) if isinstance(parent, list) else key] = copy.deepcopy(op.get("value"))
        elif kind == "test":
            if _get(parent, key, path) != op.get("value"):
                raise KubeError(422, "Invalid", f"testing value {path} failed")
        else:
            raise KubeError(400, "BadRequest", f"unexpected JSON patch operation {kind!r}")
    return doc


def _get(parent: Any, key: str, path: str) -> Any:
    try:
        return parent[int(key)] if isinstance(parent, list) else parent[key]
    except (KeyError, IndexError, ValueError, TypeError):
        raise KubeError(422, "Invalid", f"doc is missing key: {path}") from None


def _remove(parent: Any, key: str, path: str) -> None:
    _get(parent, key, path)
    del parent[int(key) if isinstance(parent, list) else key]
