"""The JSON Patch (RFC 6902) that turns one stored build tree into the next.

Build trees (:mod:`airflow_bkci.model.tree`) key every child by id, so a diff
only ever has to walk objects: a key only in the old document is a
``remove``, a key only in the new one an ``add`` carrying the whole subtree,
and a changed value a ``replace``. Lists are leaves: a changed list is replaced
whole, never diffed element by element.

Equality is JSON equality with types kept: ``1`` and ``True``, and ``1`` and
``1.0``, are different values (they serialise differently), while ``0.0`` and
``-0.0`` are the same number. So applying the patch to ``old`` gives a document
that serialises like ``new`` (up to the sign of a zero). Paths are JSON Pointers
(RFC 6901): ``~`` in a key is written ``~0`` and ``/`` is written ``~1``.

Order of operations: within one object, removes come first, then the changed
keys both documents have (a ``replace``, or the operations of the descent into
a child object), then adds; each group in sorted key order. The same two
documents therefore always give the same patch, whatever their insertion order.

Speed: it runs once per stored batch on trees of thousands of tasks where one
task changed, against a stored copy that shares no object with the new tree.
Each task is proven equal by a C-level scan of its value types and one ``==``
instead of a Python loop over its fields; ``benchmarks/diff.py`` measures it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["diff_documents"]

_Patch = list[dict[str, Any]]

# Exact types only: a str or int subclass (an enum) takes the slow, exact path.
_SCALARS = frozenset({str, int, float, bool, type(None)})
# Between values of these types Python's == is JSON equality (no bool, no float).
_EXACT_EQ = frozenset({str, int, type(None)})
_MISSING: Any = object()


def diff_documents(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The minimal RFC 6902 JSON Patch turning `old` into `new`, depth-first over keyed children.

    Minimal among patches of ``add``, ``remove`` and ``replace`` (it never emits
    ``move``): one op per key that differs, none for a key whose values are
    equal. Neither document is modified, and no ``value`` in the patch shares a
    container with `new`: the caller may change `new` afterwards.
    """
    ops: _Patch = []
    if old is not new:
        _diff_objects(old, new, "", ops)
    return ops


def _diff_objects(old: Mapping[str, Any], new: Mapping[str, Any], path: str, ops: _Patch) -> None:
    same_keys = old.keys() == new.keys()
    if not same_keys:
        for key in sorted(old.keys() - new.keys()):
            ops.append({"op": "remove", "path": f"{path}/{_escape(key)}"})
    for key in sorted(_changed_keys(old, new)):
        before, after = old[key], new[key]
        child = f"{path}/{_escape(key)}"
        if isinstance(before, Mapping) and isinstance(after, Mapping):
            _diff_objects(before, after, child, ops)
        else:
            ops.append({"op": "replace", "path": child, "value": _copy(after)})
    if not same_keys:
        for key in sorted(new.keys() - old.keys()):
            ops.append({"op": "add", "path": f"{path}/{_escape(key)}", "value": _copy(new[key])})


def _changed_keys(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Keys of both documents whose values may differ: exact for leaves, a guess for objects.

    This loop runs once per key of every object on the way to a change, so the
    usual cases (same object, equal scalars of one type) are decided inline. A
    child object not proven equal by :func:`_flat_equal` is descended into
    rather than compared in full first: the descent emits nothing if it is
    equal after all, and comparing first would walk it twice when it is not.
    """
    changed: list[str] = []
    get = new.get
    for key, before in old.items():
        after = get(key, _MISSING)
        if before is after or after is _MISSING:
            continue
        kind = type(before)
        if kind is type(after):
            if kind in _SCALARS:
                if before != after:
                    changed.append(key)
                continue
            if kind is dict:
                if not _flat_equal(before, after):
                    changed.append(key)
                continue
        if not _json_equal(before, after):
            changed.append(key)
    return changed


def _flat_equal(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """True when both are the same object of scalars (a task); False means "look closer".

    Python's ``==`` runs in C but says ``1 == True == 1.0``. Among str, int and
    None it is exact, so the usual task (no bool, no float) needs no more than
    a C-level scan of the types; otherwise the types must match key by key.
    """
    # Types first: they stop at the first container, before == walks all of it.
    if _EXACT_EQ.issuperset(map(type, old.values())) and _EXACT_EQ.issuperset(
        map(type, new.values())
    ):
        return old == new
    types = list(map(type, old.values()))
    if not _SCALARS.issuperset(types) or old != new:
        return False
    return types == list(map(type, map(new.__getitem__, old)))


def _json_equal(a: Any, b: Any) -> bool:
    """JSON equality with types kept: bool, int and float differ; lists compare in order."""
    if a is b:
        return True
    kind = _kind(a)
    if kind is not _kind(b):
        return False
    if kind is Mapping:
        return a.keys() == b.keys() and all(_json_equal(v, b[k]) for k, v in a.items())
    if kind is list:
        return len(a) == len(b) and all(map(_json_equal, a, b))
    return bool(a == b)


def _kind(value: Any) -> type:
    """The JSON type of a value; bool is tested before int because it is one."""
    for kind in (bool, int, float, str, Mapping):
        if isinstance(value, kind):
            return kind
    if isinstance(value, (list, tuple)):
        return list
    return type(value)


def _copy(value: Any) -> Any:
    """A copy of a JSON value that shares no container with it (scalars are immutable)."""
    if isinstance(value, Mapping):
        return {key: _copy(child) for key, child in value.items()}
    if isinstance(value, (list, tuple)):
        return [_copy(child) for child in value]
    return value


def _escape(key: str) -> str:
    """A key as one JSON Pointer reference token (RFC 6901): ``~`` first, then ``/``."""
    return key.replace("~", "~0").replace("/", "~1")
