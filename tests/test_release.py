"""``python -m nmeplib release``: the student repository, and ``check`` run inside it."""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nmeplib.course import release

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("nmeplib/models/alexnet.py", "nmeplib/models/resnet.py")


def python_path(first: Path) -> str:
    """PYTHONPATH that imports ``first``'s nmeplib and still finds packages installed on the path."""
    return os.pathsep.join([str(first), *filter(None, [os.environ.get("PYTHONPATH")])])


def check_in(repo: Path, *args: str) -> subprocess.CompletedProcess:
    """``python -m nmeplib check ARGS`` with ``repo``'s own nmeplib first on the path."""
    env = {**os.environ, "PYTHONPATH": python_path(repo)}
    return subprocess.run([sys.executable, "-m", "nmeplib", "check", *args], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def cut(tmp_path_factory) -> tuple[Path, str]:
    """A release made by the command, and what it printed."""
    out, printed = tmp_path_factory.mktemp("release") / "student", io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert release.main([str(out)]) == 0
    return out, printed.getvalue()


@pytest.fixture
def student(cut) -> Path:
    return cut[0]


@pytest.fixture
def solved(student, tmp_path) -> Path:
    """A copy of the release with the course's solutions copied back in."""
    repo = tmp_path / "solved"
    shutil.copytree(student, repo)
    for path in MODELS:
        shutil.copy(ROOT / path, repo / path)
    return repo


def test_python_region_becomes_hint_and_stub():
    text = "def f():\n    # BEGIN SOLUTION\n    # f: return 42\n    return 42\n    # END SOLUTION\n"
    stripped, regions = release.strip_solutions(text, "m.py")
    assert stripped == ("def f():\n    # YOUR CODE HERE\n    # f: return 42\n"
                        "    raise NotImplementedError('f: return 42')\n")
    assert regions == [release.Region("m.py", 2, "f: return 42")]


@pytest.mark.parametrize("text, where", [
    ("x = 1\n# BEGIN SOLUTION\ny = 2\n", "m.py:2: '# BEGIN SOLUTION' is not closed"),
    ("# BEGIN SOLUTION\n# BEGIN SOLUTION\n# END SOLUTION\n", "m.py:1: '# BEGIN SOLUTION' is not closed"),
    ("x = 1\n# END SOLUTION\n", "m.py:2: '# END SOLUTION' without"),
])
def test_unclosed_or_stray_marker_is_refused(text, where):
    with pytest.raises(release.ReleaseError, match=where):
        release.strip_solutions(text, "m.py")


def test_hint_on_the_begin_line_after_a_colon():
    text = "def f(x):\n    # BEGIN SOLUTION: add one\n    return x + 1\n    # END SOLUTION\n"
    stripped, regions = release.strip_solutions(text, "m.py")
    assert stripped == ("def f(x):\n    # YOUR CODE HERE\n    # add one\n"
                        "    raise NotImplementedError('add one')\n")
    assert regions == [release.Region("m.py", 2, "add one")]


def test_answer_placeholder_from_the_begin_marker():
    text = "## Q?\n<!-- BEGIN ANSWER: a number, in words -->\nten\n<!-- END ANSWER -->\nNext.\n"
    stripped, regions = release.strip_answers(text, "w.md")
    assert stripped == "## Q?\na number, in words\nNext.\n"
    assert regions == [release.Region("w.md", 2, "a number, in words")]


@pytest.mark.parametrize("marker, begin", [("<!-- END ANSWER -->", "<!-- BEGIN ANSWER -->"),
                                           ("<!-- END MARK SCHEME -->", "<!-- BEGIN MARK SCHEME -->")])
def test_stray_end_marker_in_the_worksheet_names_its_begin(marker, begin):
    with pytest.raises(release.ReleaseError) as err:
        release.strip_worksheet(f"## Q?\n{marker}\n", "w.md")
    assert str(err.value) == f"w.md:2: {marker!r} without a {begin!r} before it"


def test_answers_blanked_and_unclosed_refused():
    text = "## Q?\n\n<!-- BEGIN ANSWER -->\nForty-two.\n<!-- END ANSWER -->\n"
    assert release.strip_answers(text, "w.md")[0] == "## Q?\n\nYOUR ANSWER HERE\n"
    with pytest.raises(release.ReleaseError, match="w.md:3: answer region is not closed"):
        release.strip_answers(text.replace("<!-- END ANSWER -->\n", ""), "w.md")


def test_mark_schemes_leave_the_release_whole():
    text = ("## Q?\n\n<!-- BEGIN ANSWER -->\nForty-two.\n<!-- END ANSWER -->\n<!-- BEGIN MARK SCHEME -->\n"
            "2 points: forty-two.\n<!-- END MARK SCHEME -->\nNext.\n")
    assert release.strip_worksheet(text, "w.md")[0] == "## Q?\n\nYOUR ANSWER HERE\nNext.\n"
    with pytest.raises(release.ReleaseError, match="w.md:6: mark scheme is not closed"):
        release.strip_worksheet(text.replace("<!-- END MARK SCHEME -->\n", ""), "w.md")


def test_refuses_a_non_empty_folder(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("x")
    assert release.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path} is not an empty folder") and "--force" in err


def release_cli(repo: Path, *args: str) -> subprocess.CompletedProcess:
    """``python -m nmeplib release ARGS`` run inside ``repo`` with its own nmeplib."""
    env = {**os.environ, "PYTHONPATH": python_path(repo)}
    return subprocess.run([sys.executable, "-m", "nmeplib", "release", *args], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def clone(tmp_path) -> Path:
    """A clone of this repository (never the repository itself) to cut releases from."""
    repo = tmp_path / "repo"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True, timeout=60)
    return repo


def tree(repo: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in repo.rglob("*") if p.is_file() and ".git" not in p.parts}


@pytest.mark.parametrize("inside", [".", "nmeplib", "notebooks/out", "..", "link", "link/nmeplib", "up/repo/x"])
def test_never_writes_into_the_repository_it_is_cut_from(clone, tmp_path, inside):
    (tmp_path / "link").symlink_to(clone)  # the same tree under another name
    (tmp_path / "up").symlink_to(tmp_path)
    before = tree(clone)
    dest = tmp_path / inside if inside.startswith(("link", "up")) else clone / inside
    with pytest.raises(release.ReleaseError, match="the repository the release is cut from"):
        release.release(clone, dest, force=True)
    assert tree(clone) == before


def test_release_dot_with_force_from_the_command_line_is_refused(clone):
    before = tree(clone)
    result = release_cli(clone, ".", "--force")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (f"error: . is the repository the release is cut from ({clone}), or holds it; "
                             f"write the release to a folder outside it\n")
    assert tree(clone) == before


def test_a_release_cut_from_a_release_is_one_error(student, tmp_path):
    repo = tmp_path / "student"
    shutil.copytree(student, repo)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "release"]):
        subprocess.run([*git, *command], cwd=repo, check=True, timeout=60)
    with pytest.raises(release.ReleaseError) as err:
        release.release(repo, tmp_path / "again")
    assert str(err.value) == (f"no solutions found in {repo}: it is a release already (a release cut from a "
                              f"release has nothing to strip); cut the release from the course repository")
    assert not (tmp_path / "again").exists()


@pytest.mark.parametrize("command", ["release", "reproduce", "worksheet"])
def test_staff_commands_in_a_release_are_one_error(student, tmp_path, command):
    """The release ships no nmeplib/course: its commands name themselves as staff-only, exit 2."""
    assert not (student / "nmeplib" / "course").exists()
    env = {**os.environ, "PYTHONPATH": python_path(student)}
    result = subprocess.run([sys.executable, "-m", "nmeplib", command, str(tmp_path / "out")], cwd=student,
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == f"error: {command} is a course-staff command, not in the student release\n"


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_a_file_in_the_output_path_is_one_error(tmp_path, capsys, force):
    (tmp_path / "notes.txt").write_text("x")
    assert release.main([str(tmp_path / "notes.txt" / "out"), *force]) == 2
    assert capsys.readouterr().err == f"error: cannot write {tmp_path}/notes.txt/out: {tmp_path}/notes.txt is a file, not a folder\n"
    assert release.main([str(tmp_path / "notes.txt"), *force]) == 2
    assert capsys.readouterr().err == f"error: cannot write {tmp_path}/notes.txt: it is a file, not a folder\n"
    assert (tmp_path / "notes.txt").read_text() == "x"


def test_release_has_no_solutions(student):
    files = {p.relative_to(student).as_posix() for p in student.rglob("*") if p.is_file()}
    assert "tests/test_models.py" not in files and "tests/test_release.py" not in files
    assert "nmeplib/grading_reference.json" in files
    everything = "".join((student / f).read_text(errors="replace") for f in files if not f.startswith("nmeplib/course/"))
    assert "BEGIN SOLUTION" not in everything and "BEGIN ANSWER" not in everything
    assert "MARK SCHEME" in (ROOT / "worksheet.md").read_text() and "MARK SCHEME" not in everything
    alexnet = (student / "nmeplib/models/alexnet.py").read_text()
    assert "nn.Conv2d(3, 64" not in alexnet and "57,044,810 parameters for 10 classes" in alexnet
    assert "BasicBlock(in_ch, out_ch" not in (student / "nmeplib/models/resnet.py").read_text()
    worksheet = (student / "worksheet.md").read_text()
    assert "## 4.1 How many parameters does AlexNet have?" in worksheet and "x = 256·6·6" not in worksheet
    assert worksheet.count("YOUR ANSWER HERE") == (ROOT / "worksheet.md").read_text().count("BEGIN ANSWER") - 1
    readme = (student / "README.md").read_text()
    assert readme == (ROOT / "README.md").read_text() and "## Your models and `check`" in readme
    assert not (student / "docs" / "staff.md").exists() and not (student / "docs" / "testing.md").exists()
    cells = json.loads((student / "notebooks/06_resnet.ipynb").read_text())["cells"]
    sources = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    assert not any("= wb.prediction_grid(" in s for s in sources)
    assert any(s.startswith("# YOUR CODE HERE") and "NotImplementedError" in s for s in sources)


def test_release_prints_what_it_stripped(cut):
    printed = cut[1]
    assert "stripped nmeplib/models/alexnet.py:" in printed and "stripped notebooks/06_resnet.ipynb cell 11:" in printed
    assert re.search(r"wrote .*: \d+ solution regions stubbed, \d+ answers blanked", printed)


def test_release_summary_counts_solutions_and_answers_apart(monkeypatch, capsys, tmp_path):
    regions = [release.Region("nmeplib/models/alexnet.py", 12, "x" * 100),
               release.Region("notebooks/06_resnet.ipynb cell 11", 3, "draw the grid"),
               release.Region("worksheet.md", 40, "YOUR ANSWER HERE")]
    monkeypatch.setattr(release, "release", lambda root, out_dir, force: regions)
    assert release.main([str(tmp_path / "out")]) == 0
    assert capsys.readouterr().out == (
        f"stripped nmeplib/models/alexnet.py:12: {'x' * 90}\n"
        "stripped notebooks/06_resnet.ipynb cell 11:3: draw the grid\n"
        "stripped worksheet.md:40: YOUR ANSWER HERE\n"
        f"wrote {tmp_path / 'out'}: 2 solution regions stubbed, 1 answers blanked\n")


def test_stubs_read_as_not_implemented(student):
    result = check_in(student, "all", "--parts", "params", "shapes")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "alexnet params: not implemented yet: AlexNet.__init__:" in result.stdout
    assert "resnet18 params: not implemented yet: ResNet18.__init__:" in result.stdout
    assert "0/4 passed" in result.stdout


def test_solutions_copied_back_pass(solved):
    result = check_in(solved, "all")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "10/10 passed" in result.stdout


def test_planted_missing_relu_is_named(solved):
    path = solved / "nmeplib/models/resnet.py"
    source = path.read_text()
    path.write_text(source.replace("return self.act2(out + self.shortcut(x))", "return out + self.shortcut(x)"))
    result = check_in(solved, "resnet18", "--parts", "params", "forward")
    assert result.returncode == 1
    assert "resnet18 forward: layer1.1.conv1 (Conv2d" in result.stdout
    assert "receives a different input" in result.stdout and "1/2 passed" in result.stdout


@pytest.mark.slow
def test_release_notebook_stops_at_first_stub_with_its_hint(student, tmp_path):
    env = {**os.environ, "PYTHONPATH": python_path(student), "NMEPLIB_SMOKE": "1"}
    result = subprocess.run([sys.executable, "-m", "papermill", "-k", "python3", "notebooks/01_datasets.ipynb",
                             str(tmp_path / "out.ipynb")], cwd=student, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode != 0
    assert "NotImplementedError: Draw two training images per class" in result.stdout + result.stderr
    cells = json.loads((tmp_path / "out.ipynb").read_text())["cells"]
    failed = [c for c in cells if c["cell_type"] == "code" and any(o["output_type"] == "error" for o in c["outputs"])]
    assert len(failed) == 1 and "".join(failed[0]["source"]).startswith("# YOUR CODE HERE")
