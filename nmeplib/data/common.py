"""What every dataset module shares."""
from __future__ import annotations


class DatasetError(ValueError):
    """A dataset file or folder that is missing or malformed; the message says which and why."""
