"""A user's own code named in a config or flag (``package.module:attr``): imported, or a one-line SnsError."""

from __future__ import annotations

import importlib
from typing import Any

from .errors import SnsError, one_line

__all__ = ["import_callable"]


def import_callable(spec: str, owner: str, expected: str = "a function returning an nn.Module") -> Any:
    """The callable ``attr`` (dotted for nested attributes) of ``package.module:attr``.

    ``owner`` starts every error, naming the key or flag that gave ``spec`` (e.g. ``arch=pkg.mod:make``).

    Raises:
        SnsError: the spec is malformed, the module cannot be imported (or fails while importing), the attribute
            is missing, or it is not callable.
    """
    module_name, sep, attr = str(spec).partition(":")
    if not sep or not module_name or not attr:
        raise SnsError(f"{owner}: expected 'package.module:factory_function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise SnsError(
            f"{owner}: cannot import module {module_name!r} ({one_line(e)}); install it or add its folder to PYTHONPATH"
        ) from None
    except Exception as e:  # the user's module failing while it imports (SyntaxError, its own errors)
        raise SnsError(f"{owner}: importing {module_name!r} failed: {one_line(e)}") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise SnsError(f"{owner}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise SnsError(f"{owner}: {attr!r} is not callable; expected {expected}")
    return obj
