"""HDF5 datasets: schema checks, class names, block streaming and building from folders."""
from __future__ import annotations

import pickle
import re

import h5py
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from nmeplib.checkpoint import OutputError
from nmeplib.config import from_dict
from nmeplib.data import build_dataset, loaders
from nmeplib.data.augment import Augment
from nmeplib.errors import DatasetError
from nmeplib.data.hdf5 import (CLASS_NAMES_KEY, SPLITS, default_class_names, images_key, inspect_hdf5, labels_key,
                               load_split, read_labels, write_hdf5)
from nmeplib.data.loaders import StreamLoader
from nmeplib.data.make_hdf5 import build_from_folder, main
from nmeplib.data.stream import HDF5Blocks

SIZES = {"train": 37, "val": 13, "test": 11}


@pytest.fixture(autouse=True)
def no_hang(monkeypatch):
    """A stuck loader worker fails the test within a minute instead of hanging it."""
    monkeypatch.setattr(loaders, "STALL_S", 60.0)


def loader(ds, num_workers: int) -> DataLoader:
    """torch's DataLoader over ``ds``, failing rather than waiting for ever on a stuck worker."""
    return DataLoader(ds, batch_size=None, num_workers=num_workers, timeout=60 if num_workers else 0)


def make_splits(num_classes: int = 5, size: int = 8, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {split: (rng.integers(0, 256, (n, 3, size, size), dtype=np.uint8),
                    None if split == "test" else rng.integers(0, num_classes, n))
            for split, n in SIZES.items()}


@pytest.fixture
def h5(tmp_path):
    """A file with 5 classes (label 4 guaranteed), chunks of 4 images, and its arrays."""
    splits = make_splits()
    splits["train"][1][0] = 4
    path = write_hdf5(tmp_path / "data.h5", splits, chunk=4)
    return path, splits


def collect(batches) -> tuple[np.ndarray, list[int]]:
    """Concatenated indices and batch sizes of an iterable of batches."""
    batches = list(batches)
    index = torch.cat([b[2] for b in batches]) if batches else torch.empty(0, dtype=torch.int64)
    return index.numpy(), [len(b[2]) for b in batches]


# --- schema and class names -------------------------------------------------------------


def test_inspect_and_load_all_splits(h5):
    path, splits = h5
    info = inspect_hdf5(path)
    assert info["img_size"] == 8 and info["num_samples"] == SIZES
    assert info["num_classes"] == 5 and info["class_names"] == default_class_names(5)
    for split in SPLITS:
        images, labels = load_split(path, split, progress=False)
        assert images.dtype == torch.uint8 and labels.dtype == torch.int64
        assert np.array_equal(images.numpy(), splits[split][0])
        expected = splits[split][1] if split != "test" else np.full(SIZES["test"], -1)
        assert np.array_equal(labels.numpy(), expected)
        assert torch.equal(read_labels(path, split), labels)
    with h5py.File(path) as f:
        assert f[images_key("train")].chunks == (4, 3, 8, 8)


def read_class_names(path, explicit=None) -> list[str]:
    return inspect_hdf5(path, explicit)["class_names"]


def test_class_name_resolution_order(tmp_path):
    path = write_hdf5(tmp_path / "d.h5", make_splits(), class_names=list("abcde"))
    assert read_class_names(path) == list("abcde")                       # root attribute
    (tmp_path / "class_names.txt").write_text("c0\nc1\nc2\nc3\nc4\n")
    (tmp_path / "d.class_names.txt").write_text("s0\ns1\ns2\ns3\ns4\n")
    assert read_class_names(path) == list("abcde")                       # the file's own names come first
    explicit = tmp_path / "mine.txt"
    explicit.write_text("\n".join(f"x{i}" for i in range(7)))
    assert read_class_names(path, explicit) == [f"x{i}" for i in range(7)]
    assert inspect_hdf5(path, explicit)["num_classes"] == 7
    with pytest.raises(DatasetError, match="nope.txt"):
        read_class_names(path, tmp_path / "nope.txt")

    bare = write_hdf5(tmp_path / "sub" / "bare.h5", make_splits())
    assert read_class_names(bare) == default_class_names(5)               # none: class_<i>
    (tmp_path / "sub" / "class_names.txt").write_text("c0\nc1\nc2\nc3\nc4\n")
    assert read_class_names(bare) == ["c0", "c1", "c2", "c3", "c4"]       # none stored: class_names.txt beside
    (tmp_path / "sub" / "bare.class_names.txt").write_text("s0\ns1\ns2\ns3\ns4\n")
    assert read_class_names(bare) == ["s0", "s1", "s2", "s3", "s4"]       # the text file named after it first
    with h5py.File(bare, "a") as f:
        f[CLASS_NAMES_KEY] = np.array([b"p", b"q", b"r", b"s", b"t"])
    assert read_class_names(bare) == list("pqrst")                        # dataset in the file


def rewrite(path, key, value) -> None:
    with h5py.File(path, "a") as f:
        del f[key]
        if value is not None:
            f[key] = value


BAD_FILES = {
    "missing dataset": (images_key("val"), None, r"missing dataset\(s\) images-val; expected images-train, "
                                                 r"images-val, images-test, labels-train, labels-val$"),
    "float images": (images_key("train"), np.zeros((37, 3, 8, 8), np.float32), r"uint8.*\(37, 3, 8, 8\)"),
    "channels last": (images_key("train"), np.zeros((37, 8, 8, 3), np.uint8), r"\(37, 8, 8, 3\)"),
    "not square": (images_key("test"), np.zeros((11, 3, 8, 6), np.uint8), r"images-test.*\(11, 3, 8, 6\)"),
    "3-D images": (images_key("val"), np.zeros((13, 8, 8), np.uint8), r"\(13, 8, 8\)"),
    "other size": (images_key("val"), np.zeros((13, 3, 6, 6), np.uint8), r": images-val holds 6 px images, other "
                                                                          r"splits 8 px$"),
    "grey": (images_key("val"), np.zeros((13, 1, 8, 8), np.uint8), r": images-val must be uint8 N x 3 x H x W with "
                                                                    r"H == W, found uint8 with shape \(13, 1, 8, 8\)$"),
    "short labels": (labels_key("val"), np.zeros(12, np.int64), r": labels-val has shape \(12,\) but images-val "
                                                                 r"holds 13 images$"),
    "float labels": (labels_key("train"), np.zeros(37, np.float32), "labels-train must hold integers"),
    "negative label": (labels_key("val"), np.full(13, -2), "negative label -2"),
}


@pytest.mark.parametrize("key, value, message", BAD_FILES.values(), ids=BAD_FILES.keys())
def test_bad_file_errors_name_file_and_problem(h5, key, value, message):
    path, _ = h5
    rewrite(path, key, value)
    with pytest.raises(DatasetError, match=message) as err:
        inspect_hdf5(path)
    assert str(path) in str(err.value)


def test_missing_and_non_hdf5_files(tmp_path):
    with pytest.raises(DatasetError, match="data_links.md"):
        inspect_hdf5(tmp_path / "absent.h5")
    text = tmp_path / "notes.h5"
    text.write_text("hello")
    with pytest.raises(DatasetError, match="not an HDF5 file"):
        inspect_hdf5(text)
    with pytest.raises(DatasetError, match="not an HDF5 file"):
        HDF5Blocks(text, "train", 4, shuffle=True)


def test_truncated_file_is_one_line_error_naming_it(h5):
    path, _ = h5
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    for call in (lambda: inspect_hdf5(path), lambda: load_split(path, "val", progress=False),
                 lambda: HDF5Blocks(path, "train", 4, shuffle=True)):
        with pytest.raises(DatasetError, match=r"truncated file.*download or build it again") as err:
            call()
        assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)


def corrupt_chunk(path, key: str = images_key("train"), chunk: int = 2) -> None:
    """Store ``key`` gzip-compressed in chunks of 4 images and garble its compressed chunk ``chunk``."""
    with h5py.File(path, "a") as f:
        data = f[key][()]
        del f[key]
        f.create_dataset(key, data=data, chunks=(4, *data.shape[1:]), compression="gzip")
    with h5py.File(path, "r") as f:
        info = f[key].id.get_chunk_info(chunk)
    assert info.filter_mask == 0 and info.size > 8       # the chunk really is compressed
    with open(path, "r+b") as f:
        f.seek(info.byte_offset + 2)
        f.write(b"\xff" * (info.size - 4))


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("shuffle", [True, False])
def test_corrupt_chunk_is_one_line_error_naming_it(h5, shuffle, num_workers):
    path, _ = h5
    corrupt_chunk(path)
    assert inspect_hdf5(path)["num_samples"] == SIZES   # the metadata is intact
    blocks = HDF5Blocks(path, "train", 4, shuffle=shuffle)
    stream = StreamLoader(blocks, Augment("none", (0.5,) * 3, (0.25,) * 3, 8, train=False),
                          num_workers=num_workers)
    with pytest.raises(DatasetError, match=r"cannot read images-train rows \d+\.\.\d+ .*filter.*"
                                           r"download or build it again") as err:
        list(stream)
    assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)
    assert ("in loader worker" in str(err.value)) == (num_workers > 0)
    assert stream._workers is None                          # the workers were stopped
    with pytest.raises(DatasetError, match=r"cannot read images-train rows 0\.\.36 "):
        load_split(path, "train", progress=False)


def test_labels_out_of_range_for_class_names(h5, tmp_path):
    path, _ = h5
    names = tmp_path / "three.txt"
    names.write_text("a\nb\nc\n")
    with pytest.raises(DatasetError, match=r"label 4 but there are only 3 class names.*three.txt"):
        inspect_hdf5(path, names)


def test_failed_write_leaves_nothing(tmp_path):
    bad = make_splits()
    bad["val"] = (bad["val"][0], bad["val"][1][:-1])
    with pytest.raises(ValueError, match="val"):
        write_hdf5(tmp_path / "bad.h5", bad)
    assert list(tmp_path.iterdir()) == []


# --- streaming ---------------------------------------------------------------------------


def test_file_is_opened_lazily_and_dataset_pickles(h5):
    path, _ = h5
    ds = HDF5Blocks(path, "train", 8, shuffle=True)
    assert ds._file is None
    copy = pickle.loads(pickle.dumps(ds))
    assert copy._file is None and len(copy) == len(ds)
    next(iter(ds))
    assert isinstance(ds._file, h5py.File)
    assert pickle.loads(pickle.dumps(ds))._file is None
    ds.close()


def test_batches_match_file_contents(h5):
    path, splits = h5
    for split, shuffle in [("train", True), ("val", False), ("test", False)]:
        for images, labels, index in HDF5Blocks(path, split, 5, shuffle=shuffle):
            assert images.dtype == torch.uint8 and images.shape[1:] == (3, 8, 8)
            assert labels.dtype == index.dtype == torch.int64
            assert np.array_equal(images.numpy(), splits[split][0][index.numpy()])
            expected = splits[split][1][index.numpy()] if split != "test" else -1
            assert np.all(labels.numpy() == expected)


def test_persistent_dataloader_workers_follow_set_epoch(h5):
    path, _ = h5
    ds = HDF5Blocks(path, "train", 5, shuffle=True, seed=3, buffer_blocks=2)
    workers = DataLoader(ds, batch_size=None, num_workers=2, persistent_workers=True, timeout=60)
    orders = []
    for epoch in (0, 1, 0):
        ds.set_epoch(epoch)
        expected, _ = collect(loader(ds, 2))          # fresh workers, started with this epoch
        index, _ = collect(workers)                   # the same workers as the epoch before
        assert np.array_equal(index, expected)
        orders.append(index)
    assert not np.array_equal(orders[0], orders[1]) and np.array_equal(orders[0], orders[2])


def test_default_block_is_chunk_multiple(h5):
    path, _ = h5
    assert HDF5Blocks(path, "train", 5, shuffle=True).block_size == 8
    assert HDF5Blocks(path, "train", 8, shuffle=True).block_size == 8


@pytest.mark.parametrize("num_workers", [0, 2])
def test_shuffle_is_deterministic_and_covers_train(h5, num_workers):
    path, _ = h5

    def epoch(epoch: int, **kw) -> tuple[np.ndarray, list[int]]:
        ds = HDF5Blocks(path, "train", 5, shuffle=True, seed=3, buffer_blocks=2, **kw)
        ds.set_epoch(epoch)
        index, sizes = collect(loader(ds, num_workers))
        assert len(sizes) == len(ds)
        return index, sizes

    first, sizes = epoch(0)
    assert sorted(first) == list(range(SIZES["train"])) and sizes.count(5) == len(sizes) - 1
    assert np.array_equal(first, epoch(0)[0])
    assert not np.array_equal(first, epoch(1)[0])
    assert not np.array_equal(first, np.arange(SIZES["train"]))

    ranks = [epoch(0, rank=r, world_size=2) for r in range(2)]
    assert len(ranks[0][1]) == len(ranks[1][1])          # ranks stay in step
    union = np.concatenate([index for index, _ in ranks])
    assert set(union) == set(range(SIZES["train"])) and len(union) == 38  # 37 + 1 padding

    dropped = [epoch(0, rank=r, world_size=2, drop_last=True) for r in range(2)]
    for index, sizes in dropped:
        assert sizes == [5, 5, 5]
    union = np.concatenate([index for index, _ in dropped])
    assert len(set(union)) == len(union) == 30


@pytest.mark.parametrize("num_workers", [0, 2])
def test_stream_loader_reshuffles_blocks_each_epoch_and_repeats_under_a_seed(tmp_path, num_workers):
    rng = np.random.default_rng(0)
    splits = {split: (rng.integers(0, 256, (n, 3, 8, 8), dtype=np.uint8), None if split == "test" else np.arange(n))
              for split, n in {"train": 64, "val": 8, "test": 8}.items()}
    path = write_hdf5(tmp_path / "ids.h5", splits, chunk=4)   # each label is the image's position
    streams = []

    def epoch(seed: int, number: int, stream: StreamLoader | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if stream is None:   # blocks of 8 images, one block in the buffer: a batch is one block, permuted
            blocks = HDF5Blocks(path, "train", 8, shuffle=True, seed=seed, drop_last=True, buffer_blocks=1)
            stream = StreamLoader(blocks, Augment("crop+flip", (0.5,) * 3, (0.25,) * 3, 8),
                                  num_workers=num_workers, seed=seed)
            streams.append(stream)
        stream.set_epoch(number)
        batches = [(x.clone(), y.clone()) for x, y in stream]
        return torch.stack([x for x, _ in batches]), torch.stack([y for _, y in batches])

    try:
        x0, y0 = epoch(1, 0)
        x1, y1 = epoch(1, 1, streams[0])
        for y in (y0, y1):
            assert sorted(y.flatten().tolist()) == list(range(64))
            assert (y // 8 == y[:, :1] // 8).all()          # every batch is one whole block
        order0, order1 = y0[:, 0] // 8, y1[:, 0] // 8
        assert not torch.equal(order0, order1)              # the blocks come in a new order
        assert not torch.equal(order0, torch.arange(8)) and not torch.equal(order1, torch.arange(8))
        assert not torch.equal(y0 % 8, y1 % 8)              # and are permuted differently inside
        for again in (epoch(1, 0, streams[0]), epoch(1, 0)):   # the same loader back at epoch 0, and a new one
            assert torch.equal(again[1], y0) and torch.equal(again[0], x0)   # augmentation included
        assert not torch.equal(epoch(2, 0)[1], y0)          # another seed, another order
    finally:
        for stream in streams:
            stream.close()


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("split", ["val", "test"])
def test_eval_keeps_file_order_and_shards_ranks(h5, split, num_workers):
    path, _ = h5
    n = SIZES[split]

    def run(**kw) -> np.ndarray:
        ds = HDF5Blocks(path, split, 3, shuffle=False, **kw)
        index, sizes = collect(loader(ds, num_workers))
        assert len(sizes) == len(ds)
        return index

    assert np.array_equal(run(), np.arange(n))
    shards = [run(rank=r, world_size=2) for r in range(2)]
    assert np.array_equal(np.concatenate(shards), np.arange(n))
    assert abs(len(shards[0]) - len(shards[1])) <= 1


def test_eval_drop_last_and_empty_shards(h5):
    path, _ = h5
    ds = HDF5Blocks(path, "val", 4, shuffle=False, drop_last=True)
    index, sizes = collect(ds)
    assert sizes == [4, 4, 4] and np.array_equal(index, np.arange(12))
    tiny = [HDF5Blocks(path, "test", 4, shuffle=False, rank=r, world_size=16) for r in range(16)]
    assert np.array_equal(np.concatenate([collect(ds)[0] for ds in tiny]), np.arange(11))


# --- building from folders ---------------------------------------------------------------


def save_png(path, shape=(12, 10), value=0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*shape, 3), value, np.uint8)).save(path)


def test_build_train_val_test_layout(tmp_path, capsys):
    src = tmp_path / "src"
    for c, cls in enumerate(["dog", "cat"]):
        for i in range(3):
            save_png(src / "train" / cls / f"{i}.png", value=10 * c + i)
        save_png(src / "val" / cls / "v.png")
    save_png(src / "test" / "b.png", shape=(20, 9), value=7)
    save_png(src / "test" / "cat" / "a.png", value=9)
    (src / "train" / "dog" / "notes.txt").write_text("not an image")

    assert main([str(src), str(tmp_path / "out" / "m.h5"), "--img-size", "6"]) == 0
    assert "2 classes, 6 px, train 6, val 2, test 2" in capsys.readouterr().out
    info = inspect_hdf5(tmp_path / "out" / "m.h5")
    assert info["class_names"] == ["cat", "dog"] and info["img_size"] == 6
    assert (tmp_path / "out" / "m.class_names.txt").read_text().split() == ["cat", "dog"]
    images, labels = load_split(info["path"], "test", progress=False)
    assert labels.tolist() == [-1, -1] and images[:, :, 0, 0].tolist() == [[9] * 3, [7] * 3]
    images, labels = load_split(info["path"], "train", progress=False)
    assert sorted(labels.tolist()) == [0, 0, 0, 1, 1, 1]
    assert all(int(img[0, 0, 0]) // 10 == 1 - lbl for img, lbl in zip(images, labels))


def test_build_class_folders_only_splits_val(tmp_path):
    src = tmp_path / "src"
    for c, cls in enumerate("abc"):
        for i in range(10):
            save_png(src / cls / f"{i}.png", value=10 * c + i)
    out = tmp_path / "d.h5"
    info = build_from_folder(src, out, img_size=4, val_fraction=0.2, progress=False)
    assert info["num_samples"] == {"train": 24, "val": 6, "test": 0}
    assert info["class_names"] == ["a", "b", "c"] and read_class_names(out) == ["a", "b", "c"]
    first = load_split(out, "val", progress=False)
    assert first[1].tolist() == [0, 0, 1, 1, 2, 2]
    assert [int(v) // 10 for v in first[0][:, 0, 0, 0]] == [0, 0, 1, 1, 2, 2]   # each from its class's folder
    build_from_folder(src, out, img_size=4, val_fraction=0.2, progress=False)
    again = load_split(out, "val", progress=False)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])   # the same images under a seed
    assert HDF5Blocks(out, "test", 4, shuffle=False).__len__() == 0


def test_build_errors_name_the_problem(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no class sub-folders"):
        build_from_folder(tmp_path / "empty", tmp_path / "a.h5", progress=False)
    (tmp_path / "noimg" / "cls").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no images for class"):
        build_from_folder(tmp_path / "noimg", tmp_path / "a.h5", progress=False)
    save_png(tmp_path / "broken" / "cls" / "ok.png")
    (tmp_path / "broken" / "cls" / "bad.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DatasetError, match="bad.jpg"):
        build_from_folder(tmp_path / "broken", tmp_path / "a.h5", progress=False)
    assert not (tmp_path / "a.h5").exists()
    with pytest.raises(DatasetError, match="no such folder"):
        build_from_folder(tmp_path / "absent", tmp_path / "a.h5", progress=False)


def test_unwritable_output_fails_before_reading_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    src = tmp_path / "src"
    save_png(src / "cls" / "0.png")
    save_png(src / "cls" / "1.png")
    folder = tmp_path / "out.h5"
    folder.mkdir()
    blocker = tmp_path / "notes.txt"
    blocker.write_text("keep me")

    def unread(*args):
        raise AssertionError("an image was read before the output path was checked")
    monkeypatch.setattr("nmeplib.data.make_hdf5.load_image", unread)
    with pytest.raises(OutputError, match=rf"cannot write {folder}: .*is a folder"):
        main([str(src), str(folder)])
    with pytest.raises(OutputError, match=rf"cannot write {blocker / 'd.h5'}: .*{blocker}"):
        main([str(src), str(blocker / "d.h5")])
    monkeypatch.undo()

    def refuse(*args):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr("os.replace", refuse)             # fails at the final rename
    with pytest.raises(OutputError, match=rf"cannot write {tmp_path / 'd.h5'}: .*Permission denied"):
        write_hdf5(tmp_path / "d.h5", make_splits())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "out.h5", "src"]
    assert list(folder.iterdir()) == [] and blocker.read_text() == "keep me"
    with pytest.raises(SystemExit):
        main([str(src), str(tmp_path / "d.h5"), "--val-fraction", "1.5"])
    assert "--val-fraction must be at least 0 and below 1, got 1.5" in capsys.readouterr().err


def test_image_split_reads_any_indices_from_the_file(h5):
    path, splits = h5
    split = build_dataset(from_dict({"DATA": {"DATASET": "medium_imagenet", "ROOT": str(path), "IMG_SIZE": 8}}), "val")
    assert split.images is None                      # read on demand, not preloaded
    for indices in ([5, 0, 5, 2], np.array([5, 0, 5, 2], dtype=np.uint8), torch.tensor([[5], [0], [5], [2]])):
        images, labels = split.get(indices)                # positions, never a mask, whatever their type
        assert torch.equal(images, torch.from_numpy(splits["val"][0][[5, 0, 5, 2]]))
        assert labels.tolist() == splits["val"][1][[5, 0, 5, 2]].tolist()
    images, labels = split.get([])
    assert images.shape == (0, 3, 8, 8) and images.dtype == torch.uint8 and labels.tolist() == []


# --- exact messages, boundaries and how whole splits are read -------------------------------------

def test_label_errors_name_the_split_exactly(h5, tmp_path):
    path, splits = h5
    names = tmp_path / "five.txt"
    names.write_text("a\nb\nc\nd\ne\n")
    assert inspect_hdf5(path, names)["num_classes"] == 5          # label 4 of 5 names: fine
    rewrite(path, labels_key("val"), np.where(np.arange(13) == 0, 5, splits["val"][1]))  # label 5 at row 0 only
    with pytest.raises(DatasetError, match=rf"^{path}: labels-val has label 5 but there are only 5 class names "
                                           rf"\(from {names}\)$"):
        inspect_hdf5(path, names)
    with pytest.raises(DatasetError, match=rf"^{path}: labels-val has label 5 but there are only 5 classes in "
                                           rf"labels-train$"):
        inspect_hdf5(path)                                         # without names the training labels decide
    rewrite(path, labels_key("val"), np.where(np.arange(13) == 0, -2, splits["val"][1]))
    with pytest.raises(DatasetError, match=rf"^{path}: labels-val has negative label -2$"):
        inspect_hdf5(path)


@pytest.mark.parametrize("label", [2**40, 5 * 10**7])
def test_a_huge_label_is_one_error_before_anything_is_allocated(h5, label):
    path, splits = h5
    n = len(splits["train"][1])
    rewrite(path, labels_key("train"), np.where(np.arange(n) == 1, label, splits["train"][1]))
    with pytest.raises(DatasetError, match=rf"^{path}: labels-train has label {label} but only {n} images"):
        inspect_hdf5(path)


def test_a_file_without_labelled_images_has_no_classes(tmp_path):
    splits = {split: (np.zeros((2 if split == "test" else 0, 3, 4, 4), np.uint8), None if split == "test"
                      else np.zeros(0, np.int64)) for split in SPLITS}
    info = inspect_hdf5(write_hdf5(tmp_path / "empty.h5", splits))
    assert info["num_classes"] == 0 and info["class_names"] == [] and info["num_samples"]["test"] == 2


def test_an_empty_class_names_file_is_refused_by_name(h5, tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("\n  \n")
    with pytest.raises(DatasetError, match=rf"^{names}: class-names file is empty$"):
        inspect_hdf5(h5[0], names)


@pytest.mark.parametrize("read", [lambda p: read_labels(p, "val"), lambda p: load_split(p, "val", progress=False)])
def test_reading_a_split_of_a_bad_file_names_the_file(h5, read):
    path, _ = h5
    rewrite(path, images_key("test"), None)
    with pytest.raises(DatasetError, match=rf"^{path}: missing dataset\(s\) images-test"):
        read(path)


def test_read_images_of_a_damaged_file_is_one_line_naming_file_and_split(h5):
    from nmeplib.data.hdf5 import read_images

    path, _ = h5
    corrupt_chunk(path)
    with pytest.raises(DatasetError, match=rf"^{path}: cannot read train images \(.*filter.*\); the file is damaged") as err:
        read_images(path, "train", torch.tensor([9, 0]))
    assert "\n" not in str(err.value)
    assert read_images(path, "train", torch.tensor([0, 3])).shape == (2, 3, 8, 8)   # other chunks still read


@pytest.mark.parametrize("chunked", [True, False])
def test_load_split_reads_whole_chunks_about_read_bytes_at_a_time(tmp_path, monkeypatch, chunked):
    """Not one image at a time: reads of ``_READ_BYTES`` (rounded up to whole chunks) land in place."""
    from nmeplib.data import hdf5

    splits = make_splits()
    path = write_hdf5(tmp_path / "data.h5", splits, chunk=4)
    if not chunked:
        rewrite(path, images_key("train"), splits["train"][0])   # contiguous storage
    reads, real = [], hdf5.read_rows
    monkeypatch.setattr(hdf5, "read_rows", lambda ds, a, b, *rest: reads.append((a, b)) or real(ds, a, b, *rest))
    monkeypatch.setattr(hdf5, "_READ_BYTES", 7 * 3 * 8 * 8)        # seven images
    images, labels = load_split(path, "train", progress=False)
    assert torch.equal(images, torch.from_numpy(splits["train"][0]))
    assert torch.equal(labels, torch.from_numpy(splits["train"][1]))
    step = 8 if chunked else 7                                       # 7 images, up to whole chunks of 4
    assert reads[:-1] == [(a, min(a + step, 37)) for a in range(0, 37, step)] and reads[-1] == (0, 37)  # labels


def test_load_split_shows_its_progress_by_default(h5, capsys, monkeypatch):
    from nmeplib.data import hdf5

    monkeypatch.setattr(hdf5, "_READ_BYTES", 3 * 8 * 8)            # one image: reads of one chunk (4 images)
    load_split(h5[0], "val")
    err = capsys.readouterr().err
    assert "loading val" in err and "13/13" in err and re.search(r"\dimg/s", err)   # the count adds up over reads
    load_split(h5[0], "val", progress=False)
    assert capsys.readouterr().err == ""


def test_shuffled_batches_mix_images_of_the_blocks_in_the_buffer(h5):
    """Images are shuffled inside a buffer of ``buffer_blocks`` blocks, not only block by block."""
    path, _ = h5
    blocks = HDF5Blocks(path, "train", 4, shuffle=True, seed=1, block_size=4, buffer_blocks=8)
    batches = [index for _, _, index in blocks]
    mixed = [len(set((index // 4).tolist())) for index in batches]   # blocks each batch draws from
    assert max(mixed) >= 3 and sum(m > 1 for m in mixed) >= len(batches) // 2


def test_one_file_handle_per_process_with_the_configured_chunk_cache(h5, monkeypatch):
    from nmeplib.data import stream

    opened, real = [], stream.open_hdf5
    monkeypatch.setattr(stream, "open_hdf5", lambda *a, **kw: opened.append(1) or real(*a, **kw))
    blocks = HDF5Blocks(h5[0], "train", 4, shuffle=False, cache_mb=3)
    opened.clear()                          # the constructor's look at the schema
    first = blocks._handle()
    assert blocks._handle() is first and len(list(blocks)) == len(blocks) and len(opened) == 1
    _, slots, nbytes, _ = first.id.get_access_plist().get_cache()
    assert nbytes == 3 * 2**20 and slots > 1000 and all(slots % p for p in range(2, int(slots ** 0.5) + 1))  # prime
    blocks._pid = -1                        # as if inherited through fork: this process opens its own
    second = blocks._handle()
    assert second is not first and len(opened) == 2
    blocks.close()                          # closes this process's handle, not the inherited one
    assert blocks._file is None and not second.id.valid and first.id.valid
    first.close()


def test_two_missing_datasets_are_both_named(h5):
    path, _ = h5
    rewrite(path, images_key("val"), None)
    rewrite(path, labels_key("val"), None)
    with pytest.raises(DatasetError, match=r": missing dataset\(s\) images-val, labels-val; expected"):
        inspect_hdf5(path)


def test_unknown_split_is_refused_by_name(h5):
    with pytest.raises(ValueError, match=r"^unknown split 'dev'; expected one of train, val, test$"):
        read_labels(h5[0], "dev")


def test_writer_refusals_say_what_was_expected(tmp_path):
    from nmeplib.data.hdf5 import HDF5Writer

    with pytest.raises(ValueError, match=r"^write_hdf5 needs at least one split$"):
        write_hdf5(tmp_path / "none.h5", {})
    with HDF5Writer(tmp_path / "w.h5", 8) as writer:
        with pytest.raises(ValueError, match=r"^train: expected uint8 N x 3 x 8 x 8 images, got float32 \(2, 3, 8, 8\)$"):
            writer.append("train", np.zeros((2, 3, 8, 8), np.float32), np.zeros(2, np.int64))
        with pytest.raises(ValueError, match=r"^test: test has no labels$"):
            writer.append("test", np.zeros((2, 3, 8, 8), np.uint8), np.zeros(2, np.int64))
        with pytest.raises(ValueError, match=r"^val: labels are required$"):
            writer.append("val", np.zeros((2, 3, 8, 8), np.uint8))
        with pytest.raises(ValueError, match=r"^val: expected 2 integer labels, got float64 \(2,\)$"):
            writer.append("val", np.zeros((2, 3, 8, 8), np.uint8), np.zeros(2))
        writer.append("test", np.zeros((2, 3, 8, 8), np.uint8))
    assert inspect_hdf5(tmp_path / "w.h5")["num_samples"] == {"train": 0, "val": 0, "test": 2}


def test_writer_builds_in_a_hidden_file_beside_the_target_and_makes_its_folders(tmp_path):
    from nmeplib.data.hdf5 import HDF5Writer

    target = tmp_path / "a" / "b" / "data.h5"
    with HDF5Writer(target, 8) as writer:
        [partial] = list(target.parent.iterdir())
        assert partial.name.startswith(".data.h5.") and partial.suffix == ".tmp" and not target.exists()
        writer.append("test", np.zeros((3, 3, 8, 8), np.uint8))
    assert [p.name for p in target.parent.iterdir()] == ["data.h5"]
    with h5py.File(target) as f:
        assert f[images_key("test")].chunks == (256, 3, 8, 8)      # the default chunk: 256 images
    (tmp_path / "folder.h5").mkdir()
    with pytest.raises(OutputError, match=rf"^cannot write {tmp_path / 'folder.h5'}: \[Errno 21\] is a folder, "
                                          rf"give a file name: '{tmp_path / 'folder.h5'}'$"):
        HDF5Writer(tmp_path / "folder.h5", 8)


def test_test_split_labels_are_minus_one_int64_in_every_batch(h5):
    path, _ = h5
    labels = read_labels(path, "test")
    assert labels.dtype == torch.int64 and labels.tolist() == [-1] * SIZES["test"]
    for images, labels, index in HDF5Blocks(path, "test", 4, shuffle=False):
        assert labels.dtype == torch.int64 and labels.tolist() == [-1] * len(images) == [-1] * len(index)


def test_hdf5_blocks_defaults_and_argument_checks(h5, tmp_path):
    path, splits = h5
    plain = HDF5Blocks(path, "train", 4, shuffle=True)
    spelt = HDF5Blocks(path, "train", 4, shuffle=True, seed=0, rank=0, world_size=1, drop_last=False,
                       block_size=4, buffer_blocks=8, cache_mb=64)
    assert plain.cache_mb == 64 and collect(plain)[0].tolist() == collect(spelt)[0].tolist()
    plain.close(), spelt.close()
    assert len(HDF5Blocks(path, "train", 1, shuffle=False, block_size=1)) == 37
    for bad in ({"batch_size": 0}, {"buffer_blocks": 0}, {"block_size": 0}):
        with pytest.raises(ValueError, match=r"^batch_size, block_size and buffer_blocks must be positive$"):
            HDF5Blocks(path, "train", **{"batch_size": 4, **bad}, shuffle=True)
    for rank in (-1, 2):
        with pytest.raises(ValueError, match=rf"^rank {rank} is not in 0\.\.1$"):
            HDF5Blocks(path, "train", 4, shuffle=True, rank=rank, world_size=2)
    assert len(HDF5Blocks(path, "train", 19, shuffle=True, world_size=2, drop_last=True)) == 0   # 18 images a rank
    rewrite(path, images_key("train"), splits["train"][0])          # contiguous: blocks of one batch
    assert HDF5Blocks(path, "train", 5, shuffle=True).block_size == 5
    rewrite(path, labels_key("val"), None)
    with pytest.raises(DatasetError, match=rf"^{path}: missing dataset"):
        HDF5Blocks(path, "train", 4, shuffle=True)


def test_a_closed_stream_reopens_on_the_next_epoch(h5):
    blocks = HDF5Blocks(h5[0], "val", 4, shuffle=False)
    first = collect(blocks)[0]
    blocks.close()
    blocks.close()                                                  # twice is harmless
    assert np.array_equal(collect(blocks)[0], first)


def test_a_writer_closed_by_hand_keeps_its_file_and_closes_once(tmp_path):
    from nmeplib.data.hdf5 import HDF5Writer

    writer = HDF5Writer(tmp_path / "w.h5", 8)
    writer.append("test", np.zeros((2, 3, 8, 8), np.uint8))
    writer.close()
    writer.close()
    assert inspect_hdf5(tmp_path / "w.h5")["num_samples"]["test"] == 2
    with h5py.File(write_hdf5(tmp_path / "d.h5", make_splits())) as f:
        assert f[images_key("val")].chunks[0] == 256                  # write_hdf5's default chunk too


@pytest.mark.parametrize("empty", ["train", "val"])
def test_a_split_that_training_needs_must_hold_images(tmp_path, empty):
    from nmeplib.engine import fit

    splits = make_splits()
    splits["train"][1][0] = 4
    splits[empty] = (splits[empty][0][:0], splits[empty][1][:0])
    path = write_hdf5(tmp_path / "data.h5", splits, chunk=4)
    config = from_dict({"DATA": {"DATASET": "medium_imagenet", "ROOT": str(path), "IMG_SIZE": 8, "BATCH_SIZE": 4,
                                 "NUM_WORKERS": 0}, "MODEL": {"NAME": "lenet"},
                        "TRAIN": {"EPOCHS": 1, "WARMUP_EPOCHS": 0}, "OUTPUT": str(tmp_path / "run")})
    with pytest.raises(DatasetError, match=rf"^the {empty} split of {path} holds no images"):
        fit(config)
    assert not (tmp_path / "run" / "summary.json").exists()


def test_a_train_subset_of_a_streamed_file_holds_the_files_own_images(h5):
    """DATA.TRAIN_SUBSET on an HDF5 file read from disk: the subset's images are read once into
    memory, each the file's image at its index, with its label."""
    from nmeplib.data import build_loader
    from nmeplib.data.build import train_subset

    path, splits = h5
    images, labels = splits["train"]
    config = from_dict({"DATA": {"DATASET": "medium_imagenet", "ROOT": str(path), "IMG_SIZE": 8, "BATCH_SIZE": 4,
                                 "TRAIN_SUBSET": 12}})
    split = build_loader(config, "train").split
    picked = train_subset(torch.from_numpy(labels), 12, config.SEED).numpy()
    assert len(split) == 12 and split.images is not None
    assert np.array_equal(split.images.numpy(), images[picked]) and np.array_equal(split.labels.numpy(), labels[picked])
