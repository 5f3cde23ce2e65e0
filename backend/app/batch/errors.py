"""The one error a batch run ends in when the user must change something."""

from __future__ import annotations


class BatchInputError(ValueError):
    """Bad input, options or environment (files, columns, model, output folder, scheduler).

    ``str(error)`` is one line saying what was wrong and what to do; the CLI prints it and exits with status 2.
    Raised on workers too: Dask sends it back to the client as it is.
    """
