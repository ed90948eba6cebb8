"""Files written whole or not at all, and the JSON and JSON-lines files runs keep.

Every file is written to a temporary file in the same folder and renamed over the old one,
so a process killed at any moment (SIGKILL, preemption, a full disk) leaves either the old
file or the new one, never half of one. A write that fails for a reason of the file system
(a full disk, a file where a folder should be) is an :class:`~nmeplib.errors.OutputError`
that says what to do.
"""
from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Callable

from .errors import OutputError

METRICS = "metrics.jsonl"  # a run folder's epoch rows, one JSON object a line
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def describe(err: OSError, path: Path) -> str:
    """Why ``path`` could not be written, in words a user acts on."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"the disk holding {path.parent} is full; free some space"
    # os.path.isdir, not Path.is_dir: it answers False for a name the file system refuses (too long)
    if err.errno in (errno.ENOTDIR, errno.EEXIST) and not os.path.isdir(path.parent):
        blocker = next(p for p in [path.parent, *path.parents] if os.path.lexists(p))
        if blocker.is_symlink() and not blocker.exists():
            target = blocker.parent / os.readlink(blocker)
            return f"{blocker} is a symlink to {target}, which does not exist; create {target} or give another path"
        return f"{blocker} is a file, not a folder"
    if err.errno == errno.EISDIR or os.path.isdir(path):
        return f"{path} is a folder; give a file name"
    return err.strerror or str(err)


def temporary_beside(path: Path, name: str | None = None) -> tuple[int, Path]:
    """A new file in ``path``'s folder (made if need be) that is to replace ``path``, open for
    writing: its descriptor and name (``name``, else ``.NAME.RANDOM.tmp``). It has the permissions
    ``open()`` gives (0666 less the umask). ``IsADirectoryError`` when ``path`` is a folder."""
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a folder, give a file name", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    if name is not None:
        tmp = path.with_name(name)
        return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp gives 0600
    return fd, Path(tmp)


def settle(tmp: Path, path: Path, commit: bool = True) -> None:
    """Rename ``tmp`` over ``path`` (``commit``) or throw it away; it never outlives the call."""
    try:
        if commit:
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike, write: Callable[[IO], None], mode: str = "wb") -> Path:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it to ``path``.

    On any failure the temporary file is removed and ``path`` keeps its old contents; an
    ``OSError`` (full disk, a file where a folder should be) becomes :class:`OutputError`.
    """
    path = Path(path)
    try:
        fd, tmp = temporary_beside(path)
        done = False
        try:
            with os.fdopen(fd, mode, **({} if "b" in mode else {"newline": ""})) as f:
                write(f)
            done = True
        finally:
            settle(tmp, path, commit=done)
    except Exception as err:
        cause = os_error(err)
        if cause is None:
            raise
        raise OutputError(f"could not write {path}: {describe(cause, path)}") from None
    return path


def os_error(err: BaseException | None) -> OSError | None:
    """The OSError behind ``err`` (``torch.save`` on a full disk raises a RuntimeError over one)."""
    while err is not None and not isinstance(err, OSError):
        err = err.__context__
    return err


def _plain(value):
    """JSON fallback for tensors and NumPy values."""
    return value.tolist() if hasattr(value, "tolist") else str(value)


def write_json(path: str | os.PathLike, data: dict) -> Path:
    """``data`` as indented JSON, written atomically; tensors and NumPy values become lists or numbers."""
    return atomic_write(path, lambda f: f.write(json.dumps(data, indent=2, default=_plain)), "w")


def read_json(path: str | os.PathLike) -> dict | None:
    """A JSON file's contents, or None when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def write_jsonl(path: str | os.PathLike, rows: list[dict]) -> Path:
    """One JSON object a line, written atomically."""
    return atomic_write(path, lambda f: f.writelines(json.dumps(r, default=_plain) + "\n" for r in rows), "w")


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The objects of a JSON-lines file (blank lines skipped); ValueError naming a line that is not JSON."""
    path = Path(path)
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}, line {number}: not JSON ({err.msg})") from None
    return rows


def read_metrics(path_or_run_dir: str | os.PathLike) -> list[dict]:
    """The rows of a ``metrics.jsonl`` file, or of the one inside a run's output folder."""
    path = Path(path_or_run_dir)
    return read_jsonl(path / METRICS if path.is_dir() else path)
