"""Every exception the project defines is a ProxyError, and proxy/errors.py's tree names it."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType

import prefetch
import proxy
from proxy import errors
from proxy.errors import ProxyError


def _modules() -> list[ModuleType]:
    found = []
    for package in (proxy, prefetch):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if not info.name.endswith(".__main__"):  # runs the command line when imported
                found.append(importlib.import_module(info.name))
    return found


def _exceptions() -> list[type[BaseException]]:
    return [
        obj
        for module in _modules()
        for name, obj in vars(module).items()
        if inspect.isclass(obj)
        and issubclass(obj, BaseException)
        and obj.__module__ == module.__name__  # defined there, not imported
        and not name.startswith("_")  # internal control flow may stay outside (says why)
    ]


def test_errors__every_public_exception_is_a_proxy_error() -> None:
    found = _exceptions()
    # The walk must reach the modules that define their own (else this checks nothing).
    assert {"CannotListen", "BadCall", "SyncFailed", "XmlRpcRefused"} <= {c.__name__ for c in found}
    outside = [f"{c.__module__}.{c.__name__}" for c in found if not issubclass(c, ProxyError)]
    assert outside == []


def test_errors__the_tree_in_the_docstring_names_every_one() -> None:
    tree = errors.__doc__ or ""
    assert "\nProxyError\n +-- " in tree  # the root, then its branches
    named = [c for c in _exceptions() if c is not ProxyError]
    missing = [c.__name__ for c in named if f"-- {c.__name__} " not in tree]
    assert missing == []
