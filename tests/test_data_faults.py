"""Bad data and interrupted builds: each is one clear error or cleaned up, never silent wrong training."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nmeplib.config import from_dict
from nmeplib.data import build_dataset
from nmeplib.errors import DatasetError
from nmeplib.data.hdf5 import inspect_hdf5
from nmeplib.data.make_hdf5 import build_from_folder

ROOT = Path(__file__).resolve().parents[1]


def image_folder(src: Path, classes: list[str], per_class: int = 2) -> Path:
    """``src/<class>/<i>.png``: tiny solid images."""
    for c, name in enumerate(classes):
        (src / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(np.full((6, 6, 3), 10 * c + i, np.uint8)).save(src / name / f"{i}.png")
    return src


def hdf5_split(path: Path, split: str = "train"):
    config = from_dict({"DATA": {"DATASET": "medium_imagenet", "ROOT": str(path), "IMG_SIZE": 4}})
    return build_dataset(config, split)


# --- class names live in each file ---------------------------------------------------------------


def test_two_files_built_in_one_folder_keep_their_own_class_names(tmp_path):
    out = tmp_path / "out"
    build_from_folder(image_folder(tmp_path / "two", ["cat", "dog"]), out / "X.hdf5", img_size=4, progress=False)
    build_from_folder(image_folder(tmp_path / "three", ["bird", "cat", "dog"]), out / "Y.hdf5", img_size=4,
                      progress=False)
    assert hdf5_split(out / "X.hdf5").class_names == ["cat", "dog"]
    assert hdf5_split(out / "Y.hdf5").class_names == ["bird", "cat", "dog"]
    assert (out / "X.class_names.txt").read_text() == "cat\ndog\n"           # a sidecar named after each file
    assert (out / "Y.class_names.txt").read_text() == "bird\ncat\ndog\n"
    assert not (out / "class_names.txt").exists()


def test_names_stored_in_the_file_win_over_a_shared_class_names_txt(tmp_path):
    build_from_folder(image_folder(tmp_path / "src", ["cat", "dog"]), tmp_path / "X.hdf5", img_size=4, progress=False)
    (tmp_path / "class_names.txt").write_text("bird\ncat\ndog\n")          # left by another file or older builds
    assert inspect_hdf5(tmp_path / "X.hdf5")["class_names"] == ["cat", "dog"]


def test_a_class_folder_whose_name_holds_a_newline_is_refused(tmp_path):
    src = image_folder(tmp_path / "src", ["ant", "bee\nwasp", "cow"])
    with pytest.raises(DatasetError, match=r"^.*'bee\\nwasp'.*line break"):
        build_from_folder(src, tmp_path / "X.hdf5", img_size=4, progress=False)
    assert not (tmp_path / "X.hdf5").exists()


# --- a killed make-hdf5 ----------------------------------------------------------------------------


def make_hdf5(*args: str, umask: int = 0o022, **kwargs) -> subprocess.Popen:
    """``python -m nmeplib make-hdf5 ARGS`` as a child process with its own umask."""
    return subprocess.Popen([sys.executable, "-m", "nmeplib", "make-hdf5", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: os.umask(umask), **kwargs)


def slow_folder(src: Path, images: int = 400) -> Path:
    """Many hard links to one 600 px image: each costs milliseconds to decode, so a build lasts seconds."""
    (src / "a").mkdir(parents=True)
    (src / "b").mkdir()
    big = src / "big.png.orig"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (600, 600, 3), dtype=np.uint8)).save(big, "PNG")
    for i in range(images):
        os.link(big, src / "ab"[i % 2] / f"{i}.png")
    return src


def temporaries(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp"))


@pytest.mark.timeout(60)
def test_a_killed_build_leaves_a_temporary_that_the_next_build_removes(tmp_path):
    out = tmp_path / "out" / "X.hdf5"
    child = make_hdf5(str(slow_folder(tmp_path / "slow")), str(out), "--img-size", "8")
    deadline = time.monotonic() + 30
    while not (out.parent.is_dir() and temporaries(out.parent)) and time.monotonic() < deadline:
        assert child.poll() is None, child.communicate()
        time.sleep(0.02)
    time.sleep(0.3)                                                     # midway through the images
    assert child.poll() is None, "make-hdf5 finished before it could be killed"
    child.send_signal(signal.SIGKILL)
    child.communicate()
    [stale] = temporaries(out.parent)
    assert not out.exists()

    # a live writer's temporary of the same output and another output's temporary must stay
    host = socket.gethostname()
    live = out.parent / f".X.hdf5.{os.getpid()}@{host}.live0001.tmp"
    other = out.parent / f".Y.hdf5.{child.pid}@{host}.dead0001.tmp"
    live.write_bytes(b"being written"), other.write_bytes(b"not ours")

    done = make_hdf5(str(image_folder(tmp_path / "small", ["a", "b"])), str(out), "--img-size", "8")
    stdout, stderr = done.communicate(timeout=30)
    assert done.returncode == 0, stderr
    assert not stale.exists()
    assert temporaries(out.parent) == [live, other]
    assert inspect_hdf5(out)["class_names"] == ["a", "b"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664)])
def test_built_files_get_the_permissions_the_umask_gives(tmp_path, umask, mode):
    out = tmp_path / "X.hdf5"
    child = make_hdf5(str(image_folder(tmp_path / "src", ["a", "b"])), str(out), "--img-size", "4", umask=umask)
    _, stderr = child.communicate(timeout=30)
    assert child.returncode == 0, stderr
    assert os.stat(out).st_mode & 0o777 == mode
    sidecar = tmp_path / "X.class_names.txt"
    assert os.stat(sidecar).st_mode & 0o777 == mode


# --- the class count and empty splits ---------------------------------------------------------------


def test_cifar_meta_with_other_than_ten_class_names_is_refused(tmp_path):
    import pickle

    from helpers import CIFAR_CLASSES, write_cifar

    folder = write_cifar(tmp_path)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [c.encode() for c in CIFAR_CLASSES + ["sofa", "lamp"]]}, f)
    config = from_dict({"DATA": {"DATASET": "cifar10", "ROOT": str(tmp_path)}})
    with pytest.raises(DatasetError, match=rf"^{folder / 'batches.meta'} names 12 classes; CIFAR-10 has 10"):
        build_dataset(config, "train")


@pytest.mark.parametrize("split", ["val", "test"])
def test_a_loader_over_an_empty_split_is_refused(tmp_path, split):
    from nmeplib.data import build_loader
    from nmeplib.data.hdf5 import write_hdf5

    rng = np.random.default_rng(0)
    sizes = {"train": 8, "val": 4, "test": 4, split: 0}
    path = write_hdf5(tmp_path / "d.h5", {s: (rng.integers(0, 256, (n, 3, 4, 4), dtype=np.uint8),
                                              None if s == "test" else np.arange(n) % 2) for s, n in sizes.items()})
    config = from_dict({"DATA": {"DATASET": "medium_imagenet", "ROOT": str(path), "IMG_SIZE": 4, "NUM_WORKERS": 0}})
    with pytest.raises(DatasetError, match=rf"^the {split} split of {path} holds no images"):
        build_loader(config, split, device="cpu")
