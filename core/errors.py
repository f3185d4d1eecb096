"""User-facing errors that name parameters, not command-line flags.

Every problem a user can fix (bad file, wrong CRS, bad option) is raised as an
:class:`ImplicityError` whose message says which input, what is wrong and what to do. Where the
problem is a parameter of a core function, the message refers to it with :func:`param`, e.g.
``InputError(f"{param('resolution')} must be positive")``, and the error carries its name in
:attr:`ImplicityError.parameter`. Each front end renders the reference in its own words with
:meth:`ImplicityError.render`: the CLI as its flag (``--resolution``), the QGIS plugin as the
parameter's label ('Resolution'), a library caller (``str(exc)``) as the parameter's name.
"""
from __future__ import annotations

import re
from typing import Callable

_OPEN, _CLOSE = "\u27e6", "\u27e7"  # ⟦name⟧: brackets no path, CRS or number contains
_PARAM = re.compile(f"{_OPEN}([A-Za-z_][\\w.]*){_CLOSE}")


def param(name: str) -> str:
    """A reference to the parameter ``name`` inside an error message, rendered by the front end."""
    return f"{_OPEN}{name}{_CLOSE}"


class ImplicityError(Exception):
    """A problem with the user's input or options, with an actionable message.

    ``parameter``: the core parameter that was wrong (default: the first one the message refers to).
    """

    def __init__(self, message: str = "", parameter: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        found = _PARAM.findall(message)
        self.parameter = parameter or (found[0] if found else None)

    @property
    def parameters(self) -> list[str]:
        """Every parameter the message refers to, in order."""
        return _PARAM.findall(self.message)

    def render(self, name: Callable[[str], str] | None = None) -> str:
        """The message with each parameter reference written as ``name(parameter)`` (default: as is)."""
        return _PARAM.sub(lambda m: name(m.group(1)) if name else m.group(1), self.message)

    def __str__(self) -> str:
        return self.render()


class InputError(ImplicityError):
    """An input file, layer or option cannot be used as given."""


class CancelledError(ImplicityError):
    """The user cancelled a running job; partial outputs have been removed."""
