"""Field checks shared by the input specs and their parameter objects: their ``__post_init__`` rules
(:func:`check_rules`) and their ``from_dict`` (the other functions). numpy-free, torch-free.

Each raises ValueError starting with ``where`` (what the object or mapping is, e.g. ``metadata.json
task.input``) and naming the field at fault, so that a bad spec in a bundle or a config says what to change.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import Field, fields
from typing import Any


def check_rules(obj: Any, checks: dict[str, bool], rules: dict[str, str], where: str) -> None:
    """ValueError naming the first field whose check is False, with its value and its rule (``rules[name]``)."""
    for name, ok in checks.items():
        if not ok:
            raise ValueError(f"{where}: field '{name}' = {getattr(obj, name)!r} is invalid ({rules[name]})")


def expect_dict(d: Any, where: str) -> None:
    """ValueError unless ``d`` is a dict."""
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected a dict, got {type(d).__name__}")


def expect_kind_version(d: dict, where: str, kind: str, version: int) -> None:
    """ValueError unless ``d["kind"]`` is ``kind`` and ``d["version"]`` is ``version`` (a versioned spec)."""
    if d.get("kind") != kind:
        raise ValueError(f"{where}: kind {d.get('kind')!r} is not {kind!r}")
    if d.get("version") != version:
        raise ValueError(f"{where}: spec version {d.get('version')!r}, this tool reads version {version}")


def reject_unknown(d: dict, known: Iterable[str], where: str) -> None:
    """ValueError naming the keys of ``d`` that are not in ``known`` (sorted), if any."""
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}")


def required_values(cls: type, d: dict, where: str) -> Iterator[tuple[Field, Any]]:
    """(field, ``d[field.name]``) of each field of the dataclass ``cls``, in order; a missing one raises
    ValueError naming it when it is reached (so a bad earlier field is reported first)."""
    for f in fields(cls):
        if f.name not in d:
            raise ValueError(f"{where}: missing field '{f.name}'")
        yield f, d[f.name]


def construct(cls: type, kwargs: dict, where: str) -> Any:
    """``cls(**kwargs)``, its ValueError (a field rule) prefixed with ``where``."""
    try:
        return cls(**kwargs)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
