"""Griffe extension: document the names a package exports lazily (PEP 562 `__getattr__`).

Static analysis sees `arhmm_eqx.fit_gradient` or `arhmm_eqx.workflow.fit` nowhere, since
they are imported on first access. This extension imports each public module of the
package at build time, asks it for its public names (`__all__`, else `dir()`), and adds
every one that static analysis missed as an alias of the object where it is defined. The
pages can then name objects by their public paths only, and stay correct when the modules
behind them move.

The runtime import reads the package from this repository's `src/`, the folder that
static analysis reads (`paths: [src]` in mkdocs.yml), so both see the same code even where
another copy of the package is installed.
"""

import importlib
import inspect
import pathlib
import sys
import types

import griffe


_PACKAGE = "arhmm_eqx"
_SRC = str(pathlib.Path(__file__).resolve().parents[1] / "src")


def _public_names(module: types.ModuleType) -> list[str]:
    names = getattr(module, "__all__", None)
    if names is None:
        names = dir(module)
    return [name for name in names if not name.startswith("_")]


def _add_lazy_aliases(package: griffe.Module) -> None:
    if _SRC not in sys.path:
        sys.path.insert(0, _SRC)
    for griffe_module in [package, *_public_submodules(package)]:
        runtime = importlib.import_module(griffe_module.path)
        for name in _public_names(runtime):
            if name in griffe_module.members:
                continue
            value = inspect.unwrap(getattr(runtime, name))
            if isinstance(value, types.ModuleType) or not hasattr(value, "__qualname__"):
                continue
            target = f"{value.__module__}.{value.__qualname__}"
            griffe_module.set_member(name, griffe.Alias(name, target, parent=griffe_module))


def _public_submodules(module: griffe.Module):
    for name, member in module.members.items():
        if not member.is_alias and member.is_module and not name.startswith("_"):
            yield member
            yield from _public_submodules(member)


class LazyExports(griffe.Extension):
    """Add the lazily exported names of `arhmm_eqx` and its subpackages as aliases."""

    def on_package(self, *, pkg: griffe.Module, **kwargs) -> None:  # griffe >= 1.14
        if pkg.path == _PACKAGE:
            _add_lazy_aliases(pkg)

    def on_package_loaded(self, *, pkg: griffe.Module, **kwargs) -> None:  # older griffe
        if pkg.path == _PACKAGE:
            _add_lazy_aliases(pkg)
