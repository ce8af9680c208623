"""Registries of ``name -> "module:attribute"`` strings, resolved at use so that importing a registry stays cheap."""

from __future__ import annotations

import importlib
from collections.abc import Mapping


def resolve(registry: Mapping[str, str], name: str, what: str):
    """The attribute that ``registry[name]`` names; a ValueError naming ``what`` and the known names otherwise."""
    if name not in registry:
        raise ValueError(f"{what} {name!r}; known: {sorted(registry)}")
    module, attribute = registry[name].split(":")
    return getattr(importlib.import_module(module), attribute)
