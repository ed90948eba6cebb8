"""The errors nmeplib expects: wrong settings, data, checkpoints or output paths.

Each one's message says what is wrong and what to do, so the command line prints it as one
``error: ...`` line (exit status 2) instead of a traceback. The ``ValueError``/``OSError`` bases
let callers that catch those keep working.
"""
from __future__ import annotations


class NmeplibError(Exception):
    """An expected failure whose message is the whole story; the CLI prints it as ``error: ...``."""


class ConfigError(NmeplibError, ValueError):
    """A config file, key or value that is wrong; the message names it."""


class DatasetError(NmeplibError, ValueError):
    """A dataset file or folder that is missing or malformed; the message says which and why."""


class CheckpointError(NmeplibError, ValueError):
    """A file that is not a usable nmeplib checkpoint; the message names it."""


class OutputError(NmeplibError, OSError):
    """A run folder or output file that cannot be written, is in use, or may not be replaced."""
