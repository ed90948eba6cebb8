import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from nmeplib.config import load_config
from nmeplib.data import DatasetError, build_dataset, build_loader
from nmeplib.data.augment import Augment, parse_augment, random_crop
from nmeplib.runtime import generator

from helpers import CIFAR_CLASSES, write_cifar


def cifar_config(root, *overrides):
    return load_config("lenet_base", [f"DATA.ROOT={root}", "DATA.DOWNLOAD=false", "DATA.BATCH_SIZE=16", *overrides])


def test_cifar_reader_official_layout(tmp_path):
    write_cifar(tmp_path, per_batch=20)
    train = build_dataset(cifar_config(tmp_path), "train")
    val = build_dataset(cifar_config(tmp_path / "cifar-10-batches-py"), "val")  # the folder itself works too
    assert train.images.shape == (100, 3, 32, 32) and train.images.dtype == torch.uint8
    assert len(val) == 20 and val.class_names == CIFAR_CLASSES
    assert train.labels.dtype == torch.int64 and int(train.labels.max()) < 10


def test_cifar_missing_without_download_names_path(tmp_path):
    with pytest.raises(DatasetError, match=rf"{tmp_path}.*data_links\.md"):
        build_dataset(cifar_config(tmp_path / "nowhere"), "train")


def test_cifar_download_failure_names_path(tmp_path, monkeypatch):
    import torchvision.datasets.utils as utils

    def offline(*args, **kwargs):
        raise OSError("network unreachable")
    monkeypatch.setattr(utils, "download_and_extract_archive", offline)
    with pytest.raises(DatasetError, match=rf"{tmp_path / 'c'}.*download failed.*data_links\.md"):
        build_dataset(cifar_config(tmp_path / "c", "DATA.DOWNLOAD=true"), "train")


def test_cifar_download_goes_into_the_data_root_and_is_read_from_there(tmp_path, monkeypatch, capsys):
    import torchvision.datasets.utils as utils

    calls = []

    def download(url, download_root, *args, **kwargs):
        calls.append((url, download_root))
        write_cifar(Path(download_root))
    monkeypatch.setattr(utils, "download_and_extract_archive", download)
    root = tmp_path / "c"
    val = build_dataset(cifar_config(root, "DATA.DOWNLOAD=true"), "val")
    url = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    assert calls == [(url, str(root))]
    assert f"CIFAR-10 not found in {root}: downloading {url} there" in capsys.readouterr().out
    assert len(val) == 20 and val.class_names == CIFAR_CLASSES


def test_cifar_corrupt_batch(tmp_path):
    folder = write_cifar(tmp_path)
    (folder / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DatasetError, match="data_batch_3"):
        build_dataset(cifar_config(tmp_path / "x", f"DATA.ROOT={tmp_path}"), "train")


def _rewrite_batch(folder, name, change):
    with open(folder / name, "rb") as f:
        batch = pickle.load(f)
    change(batch)
    with open(folder / name, "wb") as f:
        pickle.dump(batch, f)


@pytest.mark.parametrize("split, name, change, message", [
    ("train", "data_batch_2", lambda b: b.update({b"labels": b[b"labels"][:-3]}), r"20 images but 17 labels"),
    ("train", "data_batch_4", lambda b: b[b"labels"].__setitem__(5, 10), r"\(train\) has label 10; CIFAR-10's labels are 0-9"),
    ("val", "test_batch", lambda b: b[b"labels"].__setitem__(0, -1), r"test_batch \((val|test)\) has label -1"),
    ("train", "data_batch_1", lambda b: b.update({b"data": b[b"data"].astype(np.float32) / 255}),
     r"data_batch_1 \(train\) stores its images as float32, not uint8"),
    ("train", "data_batch_5", lambda b: b.update({b"data": b[b"data"].reshape(-1)}),
     r"data_batch_5 lacks b'data' \(N×3072 uint8\) or b'labels'"),
    ("train", "data_batch_3", lambda b: b.update({b"labels": [float(x) for x in b[b"labels"]]}),
     r"data_batch_3 \(train\) has 20 images but 20 labels \(float64\); each image needs one integer label"),
])
def test_cifar_batch_that_would_train_on_wrong_data_is_refused(tmp_path, split, name, change, message):
    folder = write_cifar(tmp_path)
    _rewrite_batch(folder, name, change)
    with pytest.raises(DatasetError, match=message):
        build_dataset(cifar_config(tmp_path), split)


def test_cifar_meta_keyed_by_text_gives_the_same_class_names(tmp_path):
    folder = write_cifar(tmp_path)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": list(CIFAR_CLASSES), "num_vis": 3072}, f)
    assert build_dataset(cifar_config(tmp_path), "val").class_names == CIFAR_CLASSES


class Payload:
    """Unpickles by calling ``call(*args)``: what a booby-trapped pickle does."""

    def __init__(self, call, *args) -> None:
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


@pytest.mark.parametrize("call", ["open", "os.system"])
@pytest.mark.parametrize("name", ["batches.meta", "data_batch_2"])
def test_cifar_files_cannot_run_code(tmp_path, name, call):
    folder = write_cifar(tmp_path)
    marker = tmp_path / "marker"
    payload = Payload(open, str(marker), "w") if call == "open" else Payload(os.system, f"touch {marker}")
    with open(folder / name, "rb") as f:
        batch = pickle.load(f)
    batch[b"labels" if b"labels" in batch else b"label_names"].append(payload)
    with open(folder / name, "wb") as f:
        pickle.dump(batch, f)
    function = open if call == "open" else os.system
    refused = f"{function.__module__}.{function.__name__}"  # io.open before Python 3.12, _io.open from it
    with pytest.raises(DatasetError, match=rf"{folder / name} refers to {refused}"):
        build_dataset(cifar_config(tmp_path / "y", f"DATA.ROOT={tmp_path}"), "train")
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_reads_every_pickle_protocol(tmp_path, protocol):
    folder = write_cifar(tmp_path)
    for name in ("batches.meta", "test_batch"):
        with open(folder / name, "rb") as f:
            batch = pickle.load(f)
        batch[b"num_cases_per_batch"] = np.int64(20)   # a numpy scalar, as some copies have
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=protocol)
    val = build_dataset(cifar_config(tmp_path / "z", f"DATA.ROOT={tmp_path}"), "val")
    assert len(val) == 20 and val.class_names == CIFAR_CLASSES


def test_digits_splits_are_fixed_and_disjoint():
    config = load_config(None, ["DATA.DATASET=digits", "SEED=3"])
    splits = {s: build_dataset(config, s) for s in ("train", "val", "test")}
    assert [len(s) for s in splits.values()] == [1257, 269, 271]
    assert splits["train"].images.shape[1:] == (3, 32, 32)
    again = build_dataset(load_config(None, ["DATA.DATASET=digits", "SEED=7"]), "val")
    assert torch.equal(again.images, splits["val"].images)
    flat = {s: {tuple(x.flatten().tolist()) for x in d.images[:50]} for s, d in splits.items()}
    assert not flat["train"] & flat["val"]


def test_loader_yields_normalised_batches_in_order():
    config = load_config(None, ["DATA.DATASET=digits", "DATA.BATCH_SIZE=100"])
    loader = build_loader(config, "val", device="cpu")
    batches = list(loader)
    assert len(batches) == len(loader) == 3
    x, y = batches[0]
    assert x.dtype == torch.float32 and x.shape == (100, 3, 32, 32) and y.dtype == torch.int64
    assert abs(float(x.mean())) < 0.2 and 0.7 < float(x.std()) < 1.3
    labels = torch.cat([b[1] for b in batches])
    assert torch.equal(labels, loader.split.labels)


def test_train_loader_shuffles_per_epoch_deterministically():
    config = load_config(None, ["DATA.DATASET=digits", "DATA.BATCH_SIZE=64", "DATA.AUGMENT=standard"])
    loader = build_loader(config, "train", device="cpu")
    assert len(loader) == 1257 // 64  # drop_last
    first = [y for _, y in loader]
    again = [y for _, y in loader]
    loader.set_epoch(1)
    other = [y for _, y in loader]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))


def test_augment_names():
    assert parse_augment("none") == ()
    assert parse_augment("course") == ("jitter", "flip")
    assert parse_augment("crop+flip+erase") == ("crop", "flip", "erase")
    with pytest.raises(ValueError, match="more than one"):
        parse_augment("autoaugment+randaugment")


@pytest.mark.parametrize("spec", ["none", "course", "standard", "crop+flip+erase", "autoaugment",
                                  "randaugment", "trivialaugment+flip"])
def test_augment_schemes_shapes_and_randomness(spec):
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    aug = Augment(spec, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), img_size=48)
    out = aug(images, generator(torch.device("cpu"), 0))
    assert out.shape == (16, 3, 48, 48) and out.dtype == torch.float32 and torch.isfinite(out).all()
    plain = Augment("none", (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), img_size=48)(images)
    assert torch.equal(out, plain) == (spec == "none")


def test_eval_augment_ignores_scheme():
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    a = Augment("crop+flip+jitter", (0.5,) * 3, (0.5,) * 3, 32, train=False)(images)
    assert torch.allclose(a, (images.float() / 255 - 0.5) / 0.5, atol=1e-6)   # float32 rounding


def test_random_crop_is_a_shifted_window():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6)
    out = random_crop(x, 2, generator(torch.device("cpu"), 1))
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), mode="reflect")
    for i in range(2):
        windows = [padded[i, :, dy:dy + 6, dx:dx + 6] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out[i], w) for w in windows)


# --- TensorLoader: defaults, shards, seeding and the size of each augmentation call ------------------

class Spy:
    """An augmentation that records the number of images of each call and converts to float."""

    def __init__(self, img_size=None):
        self.calls = []
        if img_size is not None:
            self.img_size = img_size

    def __call__(self, x, gen):
        self.calls.append(len(x))
        return x.float()


def _tensor_split(n=30, side=8):
    return torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8), torch.arange(n)


def test_tensor_loader_defaults_keep_every_image_of_one_process_seeded_zero():
    from nmeplib.data.loaders import TensorLoader

    images, labels = _tensor_split()
    plain = TensorLoader(images, labels, 4, Spy(), shuffle=True)
    spelt = TensorLoader(images, labels, 4, Spy(), shuffle=True, drop_last=False, seed=0, device="cpu",
                         rank=0, world_size=1)
    got = [y for _, y in plain]
    assert [len(y) for y in got] == [4] * 7 + [2] and sorted(torch.cat(got).tolist()) == list(range(30))
    assert all(torch.equal(a, b) for a, (_, b) in zip(got, spelt))
    assert plain.images.device.type == "cpu"
    assert plain.split is None and TensorLoader(images, labels, 4, Spy(), shuffle=False, split="s").split == "s"


def test_tensor_loader_training_order_is_the_documented_permutation():
    """Epoch e of seed s is ``randperm(n)`` drawn from a CPU generator seeded ``s * 1000 + e``."""
    from nmeplib.data.loaders import TensorLoader

    images, labels = _tensor_split()
    for seed, epoch in ((0, 1), (2, 3), (5, 0)):
        loader = TensorLoader(images, labels, 30, Spy(), shuffle=True, seed=seed)
        loader.set_epoch(epoch)
        want = torch.randperm(30, generator=torch.Generator().manual_seed(seed * 1000 + epoch))
        assert torch.equal(next(iter(loader))[1], want)


@pytest.mark.parametrize("world_size", [2, 3])
def test_tensor_loader_evaluation_shards_are_contiguous_and_cover_the_split(world_size):
    from nmeplib.data.loaders import TensorLoader

    images, labels = _tensor_split(n=31)
    shards = [torch.cat([y for _, y in TensorLoader(images, labels, 4, Spy(), shuffle=False, rank=r,
                                                    world_size=world_size)]) for r in range(world_size)]
    assert torch.equal(torch.cat(shards), labels)
    assert max(len(s) for s in shards) - min(len(s) for s in shards) <= 1


def test_tensor_loader_augments_from_its_own_generator_not_the_global_one():
    from nmeplib.data.loaders import TensorLoader

    images, labels = _tensor_split()
    loader = TensorLoader(images, labels, 8, Augment("crop+flip+erase", (0.5,) * 3, (0.25,) * 3, 8),
                          shuffle=True, seed=1)
    runs = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        runs.append(torch.cat([x for x, _ in loader]))
    assert torch.equal(runs[0], runs[1])


@pytest.mark.parametrize("img_size, budget_images, calls", [
    (None, 12, [12, 12, 6]),   # an augmentation without a size: the images' own side
    (8, 12, [12, 12, 6]),
    (16, 12, [4] * 7 + [2]),   # output 4x the bytes: 3 images round down to no whole batch, and a
    (8, 3, [4] * 7 + [2]),     # chunk never holds less than one batch
    (8, 30, [28, 2]),          # whole batches only
])
def test_tensor_loader_augments_chunk_bytes_of_float_output_per_call(monkeypatch, img_size, budget_images, calls):
    from nmeplib.data import loaders
    from nmeplib.data.loaders import TensorLoader

    images, labels = _tensor_split()
    monkeypatch.setitem(loaders.CHUNK_BYTES, "cpu", budget_images * 3 * 8 * 8 * 4)   # float32 images of side 8
    spy = Spy(img_size)
    batches = list(TensorLoader(images, labels, 4, spy, shuffle=False))
    assert spy.calls == calls
    assert torch.equal(torch.cat([y for _, y in batches]), labels)


# ----------------------------------------------------------------------------- DATA.TRAIN_SUBSET

def test_train_subset_is_stratified_seeded_and_leaves_validation_whole(capsys):
    full = build_dataset(load_config("digits_lenet"), "train")
    config = load_config("digits_lenet", ["DATA.TRAIN_SUBSET=200"])
    train, val = build_loader(config, "train"), build_loader(config, "val")
    assert len(train.split) == 200 and len(val.split) == len(build_dataset(config, "val"))
    counts, share = train.split.labels.bincount(), full.labels.bincount() / len(full) * 200
    assert (counts - share).abs().max() < 1                            # each class in its own share
    assert "training on 200 of the" in capsys.readouterr().out
    again = build_loader(config, "train").split
    assert torch.equal(again.labels, train.split.labels) and torch.equal(again.images, train.split.images)
    other = build_loader(load_config("digits_lenet", ["DATA.TRAIN_SUBSET=200", "SEED=1"]), "train").split
    assert not torch.equal(other.images, train.split.images)          # another seed, other images
    rows = {tuple(img.flatten().tolist()) for img in full.images}
    assert all(tuple(img.flatten().tolist()) in rows for img in train.split.images)   # real training images


@pytest.mark.parametrize("size, message", [
    (100_000, r"^DATA.TRAIN_SUBSET=100000 is not smaller than the \d+ training images; give fewer, or 0"),
    (5, r"^DATA.TRAIN_SUBSET=5 is fewer than the 10 classes; a stratified subset needs at least one image"),
])
def test_train_subset_that_cannot_be_drawn_is_one_error(size, message):
    from nmeplib.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        build_loader(load_config("digits_lenet", [f"DATA.TRAIN_SUBSET={size}"]), "train")
    with pytest.raises(ConfigError, match="DATA.TRAIN_SUBSET must not be negative"):
        load_config("digits_lenet", ["DATA.TRAIN_SUBSET=-1"])
