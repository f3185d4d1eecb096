"""User-facing errors.

Every problem a user can fix (bad file, wrong CRS, bad option) is raised as an
:class:`ImplicityError` whose message says which input, what is wrong and what to do. The CLI and
the QGIS algorithms show the message instead of a traceback.
"""


class ImplicityError(Exception):
    """A problem with the user's input or options, with an actionable message."""


class InputError(ImplicityError):
    """An input file or layer cannot be used as given."""


class CancelledError(ImplicityError):
    """The user cancelled a running job; partial outputs have been removed."""
