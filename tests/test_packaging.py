"""The two README commands install one NumPy: the core dependencies hold the same major as the
test extras (the nuScenes devkit pins numpy<2), and the environment the suite runs in satisfies
the core pins, so a runtime-only install (`make demo`) cannot resolve a NumPy the suite never ran."""

import importlib.metadata
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _core_requirements() -> dict[str, Requirement]:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    return {r.name.lower(): r for r in reqs if r.marker is None or r.marker.evaluate()}


def test_core_dependencies_hold_numpy_1():
    spec = _core_requirements()["numpy"].specifier
    assert "1.26.4" in spec
    assert "2.0.0" not in spec and "2.4.6" not in spec


def test_installed_versions_satisfy_the_core_pins():
    for name in ("numpy", "pyarrow"):
        req = _core_requirements()[name]
        installed = importlib.metadata.version(name)
        assert installed in req.specifier, f"{name} {installed} outside the core pin {req}"
