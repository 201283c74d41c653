"""Modules named like their main function (``ftkit.evaluate``, ``ftkit.generate``) stay callable.

Importing a submodule binds it as an attribute of the package, which would shadow the lazily exported function
of the same name: after ``from ftkit.evaluate import compare``, ``ftkit.evaluate`` is the module. Giving the
module a ``__call__`` keeps ``ftkit.evaluate(...)`` working whichever was imported first.
"""

from __future__ import annotations

import sys
import types


def make_callable(module_name: str, func) -> None:
    """Make the module ``module_name`` call ``func`` when called."""

    class _CallableModule(types.ModuleType):
        def __call__(self, *args, **kwargs):
            return func(*args, **kwargs)

    sys.modules[module_name].__class__ = _CallableModule
