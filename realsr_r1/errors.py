"""One line per failure: libraries' messages (Dask, transformers, pyiqa) often go on with hints
over several lines, and the project reports each failure as one line naming its cause."""

from __future__ import annotations


def first_line(err: BaseException) -> str:
    """The first line of `err`'s message, or its type name when the message is empty."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0]
