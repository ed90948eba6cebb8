"""``python -m nmeplib release OUT_DIR``: the student repository, with the solutions taken out.

What students write is marked in place, in the style of nbgrader:

- Python files and notebook code cells: a ``# BEGIN SOLUTION`` line, the hint as comment lines
  right after it, the solution, and ``# END SOLUTION``. The release keeps the hint and replaces
  the rest with ``raise NotImplementedError(hint)``.
- ``worksheet.md``: ``<!-- BEGIN ANSWER -->`` ... ``<!-- END ANSWER -->`` around each answer,
  which becomes ``YOUR ANSWER HERE`` (or the text after ``BEGIN ANSWER:`` in the marker).

The release is built from the git-tracked files, less the staff-only ones (``STAFF_ONLY``: the
tests of the solutions, the measured answers, the staff guide and testing notes; README.md is
written for students and ships as it is), and ``grading.REFERENCE_FILE`` is written so that
``python -m nmeplib check`` can grade without the solutions. A release is never written into the
repository it is cut from (nor a folder inside it or around it, symlinks resolved), nor cut from
a tree without solutions (a release itself); each file is written whole (``atomic_write``).
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..checkpoint import OutputError, atomic_write
from ..errors import NmeplibError

BEGIN, END = "# BEGIN SOLUTION", "# END SOLUTION"
ANSWER_BEGIN, ANSWER_END = "<!-- BEGIN ANSWER", "<!-- END ANSWER -->"
ANSWER_PLACEHOLDER = "YOUR ANSWER HERE"
# The staff's rubric beside an answer: dropped from the release whole, with no placeholder.
MARK_BEGIN, MARK_END = "<!-- BEGIN MARK SCHEME -->", "<!-- END MARK SCHEME -->"
WORKSHEET = "worksheet.md"
STAFF_ONLY = (  # tests of the solutions and of this tool; measured results and figures; staff scripts
    "tests/test_models.py", "tests/test_release.py", "tests/test_grading.py", "tests/test_worksheet.py",
    "tests/test_reproduce.py", "nmeplib/course/*", "worksheet_figures/*", "figures/*", "*/figures/*", "results/*",
    "*/results/*", "runs/*", "docs/staff.md", "docs/testing.md", "benchmarks/mutation.sh", "tests/test_user_facts.py",
    "benchmarks/gpu_lease.sh", "benchmarks/import_gpu_run.py", "tests/test_score.py", "tests/test_grade.py",
)


class ReleaseError(NmeplibError, ValueError):
    """A marker problem or an unusable output folder; the message names the file and line."""


@dataclass(frozen=True)
class Region:
    path: str
    line: int  # 1-based line of the BEGIN marker (within the cell for notebooks)
    hint: str


def _comment_text(line: str) -> str:
    return line.strip().lstrip("#").strip()


def strip_solutions(text: str, path: str) -> tuple[str, list[Region]]:
    """``text`` with every solution region replaced by its hint and a ``NotImplementedError``."""
    out: list[str] = []
    regions: list[Region] = []
    lines = text.splitlines(keepends=True)
    i = 0
    while i < len(lines):
        stripped = lines[i].strip()
        if stripped.startswith(END):
            raise ReleaseError(f"{path}:{i + 1}: {END!r} without a {BEGIN!r} before it")
        if not stripped.startswith(BEGIN):
            out.append(lines[i])
            i += 1
            continue
        start, indent = i, lines[i][: len(lines[i]) - len(lines[i].lstrip())]
        hint = [stripped[len(BEGIN):].lstrip(":").strip()]
        i += 1
        while i < len(lines) and lines[i].strip().startswith("#") and not lines[i].strip().startswith((BEGIN, END)):
            hint.append(_comment_text(lines[i]))
            i += 1
        while i < len(lines) and not lines[i].strip().startswith((END, BEGIN)):
            i += 1
        if i == len(lines) or lines[i].strip().startswith(BEGIN):
            raise ReleaseError(f"{path}:{start + 1}: {BEGIN!r} is not closed by {END!r}")
        hint = [h for h in hint if h] or ["write this part"]
        out += [f"{indent}# YOUR CODE HERE\n", *(f"{indent}# {h}\n" for h in hint),
                f"{indent}raise NotImplementedError({' '.join(hint)!r})\n"]
        regions.append(Region(path, start + 1, " ".join(hint)))
        i += 1
    return "".join(out), regions


def _strip_marked(text: str, path: str, begin: str, end: str, what: str,
                  replace: Callable[[str, int], list[str]]) -> str:
    """``text`` with each region from a line starting with ``begin`` to one starting with ``end``
    replaced by ``replace(begin line, its number)``; an unclosed or stray marker is an error."""
    out: list[str] = []
    start = None
    for number, line in enumerate(text.splitlines(keepends=True), 1):
        stripped = line.strip()
        if stripped.startswith(begin):
            if start is not None:
                raise ReleaseError(f"{path}:{start}: {what} is not closed by {end!r}")
            start = number
            out += replace(stripped, number)
        elif stripped.startswith(end):
            if start is None:
                raise ReleaseError(f"{path}:{number}: {end!r} without a {begin.removesuffix(' -->') + ' -->'!r} "
                                   f"before it")
            start = None
        elif start is None:
            out.append(line)
    if start is not None:
        raise ReleaseError(f"{path}:{start}: {what} is not closed by {end!r}")
    return "".join(out)


def strip_answers(text: str, path: str) -> tuple[str, list[Region]]:
    """``text`` with every answer region replaced by its placeholder."""
    regions: list[Region] = []

    def placeholder(line: str, number: int) -> list[str]:
        text_after = line[len(ANSWER_BEGIN):].removesuffix("-->").lstrip(":").strip()
        regions.append(Region(path, number, text_after or ANSWER_PLACEHOLDER))
        return [(text_after or ANSWER_PLACEHOLDER) + "\n"]
    return _strip_marked(text, path, ANSWER_BEGIN, ANSWER_END, "answer region", placeholder), regions


def strip_mark_schemes(text: str, path: str) -> str:
    """``text`` without its mark-scheme regions (markers included); an unclosed one is an error."""
    return _strip_marked(text, path, MARK_BEGIN, MARK_END, "mark scheme", lambda line, number: [])


def strip_worksheet(text: str, path: str) -> tuple[str, list[Region]]:
    """The worksheet as students get it: mark schemes dropped, answers blanked."""
    return strip_answers(strip_mark_schemes(text, path), path)


def strip_notebook(text: str, path: str) -> tuple[str, list[Region]]:
    """A notebook with its code cells' solution regions stubbed and every output cleared."""
    notebook = json.loads(text)
    regions: list[Region] = []
    for number, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] != "code":
            continue
        source, found = strip_solutions("".join(cell["source"]), f"{path} cell {number}")
        cell["source"] = source.splitlines(keepends=True)
        cell["outputs"], cell["execution_count"] = [], None
        regions += found
    return json.dumps(notebook, indent=1, ensure_ascii=False) + "\n", regions


def tracked_files(root: Path) -> list[str]:
    """Repository-relative paths of the git-tracked files that exist, staff-only ones left out."""
    try:
        listing = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as err:
        raise ReleaseError(f"{root} is not a git checkout (git ls-files failed: {err})") from err
    paths = [p for p in listing.decode().split("\0") if p]
    return [p for p in paths if (root / p).is_file()
            and not any(fnmatch.fnmatch(p, pattern) for pattern in STAFF_ONLY)]


def build_release(root: Path) -> tuple[dict[str, bytes], list[Region]]:
    """Every file of the release (path -> contents) and the regions stripped, without writing."""
    files: dict[str, bytes] = {}
    regions: list[Region] = []
    for path in tracked_files(root):
        data = (root / path).read_bytes()
        strip = (strip_worksheet if path == WORKSHEET else strip_notebook if path.endswith(".ipynb")
                 else strip_solutions if path.endswith(".py") else None)
        if strip is not None:
            text, found = strip(data.decode(), path)
            data, regions = text.encode(), regions + found
        files[path] = data
    return files, regions


def release(root: Path, out_dir: Path, *, force: bool = False) -> list[Region]:
    """Write the student repository for ``root`` into ``out_dir``; returns the regions stripped."""
    from .. import grading

    out_dir = Path(out_dir)
    source, target = Path(root).resolve(), out_dir.resolve()
    if target == source or source in target.parents or target in source.parents:
        raise ReleaseError(f"{out_dir} is {'inside ' if source in target.parents else ''}the repository the "
                           f"release is cut from ({source}), or holds it; write the release to a folder outside it")
    blocker = next((p for p in [out_dir, *out_dir.parents] if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        where = "it" if blocker == out_dir else blocker
        raise ReleaseError(f"cannot write {out_dir}: {where} is a file, not a folder")
    if out_dir.exists() and any(out_dir.iterdir()) and not force:
        raise ReleaseError(f"{out_dir} is not an empty folder (pass --force to write into it anyway)")
    files, regions = build_release(root)
    if all(region.path == WORKSHEET for region in regions):
        raise ReleaseError(f"no solutions found in {source}: it is a release already (a release cut from a "
                           f"release has nothing to strip); cut the release from the course repository")
    reference = grading.REFERENCE_FILE.relative_to(Path(grading.__file__).parents[1]).as_posix()
    files[reference] = grading.reference_json().encode()
    for path, data in files.items():  # each file whole or absent, also when the disk fills up
        atomic_write(out_dir / path, lambda f, data=data: f.write(data))
    return regions


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m nmeplib release",
                                description="Write the student repository: solutions stubbed, answers blanked.")
    p.add_argument("out_dir", type=Path, help="folder to write (must be empty unless --force)")
    p.add_argument("--force", action="store_true", help="write into a non-empty folder, replacing files")
    args = p.parse_args(argv)
    root = Path(__file__).resolve().parents[2]
    try:
        regions = release(root, args.out_dir, force=args.force)
    except (ReleaseError, OutputError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for region in regions:
        print(f"stripped {region.path}:{region.line}: {region.hint[:90]}")
    answers = sum(r.path == WORKSHEET for r in regions)
    print(f"wrote {args.out_dir}: {len(regions) - answers} solution regions stubbed, {answers} answers blanked")
    return 0
