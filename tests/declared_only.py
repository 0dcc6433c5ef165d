"""Makes an environment behave as if it held only what kwx declares: a wheel test's venv imports this from a .pth
file, and then every module of a distribution outside kwx's dependencies fails to import as an absent one would.

"kwx's dependencies" are the closure of its declared requirements (their extras and environment markers honoured)
plus what a bare venv holds (pip, setuptools). The standard library is never blocked. An optional import
(``try: import colorama``) falls back exactly as it would in a fresh install; a module kwx needs but does not
declare fails with ModuleNotFoundError naming its distribution.
"""

from __future__ import annotations

import sys
from importlib.abc import MetaPathFinder
from importlib.metadata import PackageNotFoundError, distribution, packages_distributions

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

BARE_VENV = {"pip", "setuptools"}


def dependency_closure(root: str) -> set[str]:
    """Canonical names of ``root`` and every distribution its requirements reach, extras included."""
    reached: set[str] = set()
    pending: list[tuple[str, frozenset[str]]] = [(root, frozenset())]
    visited: set[tuple[str, frozenset[str]]] = set()
    while pending:
        name, extras = pending.pop()
        key = (canonicalize_name(name), extras)
        if key in visited:
            continue
        visited.add(key)
        try:
            requires = distribution(name).requires or []
        except PackageNotFoundError:  # a requirement whose marker excludes this platform is not installed
            continue
        reached.add(key[0])
        for text in requires:
            requirement = Requirement(text)
            if requirement.marker is not None and not any(
                    requirement.marker.evaluate({"extra": extra}) for extra in (extras or {""})):
                continue
            pending.append((requirement.name, frozenset(requirement.extras)))
    return reached


class UndeclaredModules(MetaPathFinder):
    """Refuses the top-level modules that only undeclared distributions provide."""

    def __init__(self, providers: dict[str, str]):
        self.providers = providers

    def find_spec(self, fullname, path=None, target=None):
        if fullname in self.providers:
            raise ModuleNotFoundError(f"No module named {fullname!r} (kwx does not declare "
                                      f"{self.providers[fullname]})", name=fullname)


def install(root: str = "kwx") -> UndeclaredModules:
    allowed = dependency_closure(root) | BARE_VENV
    providers = {module: ", ".join(sorted(dists)) for module, dists in packages_distributions().items()
                 if module not in sys.stdlib_module_names and not {canonicalize_name(d) for d in dists} & allowed}
    finder = UndeclaredModules(providers)
    sys.meta_path.insert(0, finder)
    return finder
