"""Batched augmentation, one component at a time, on generated uint8 batches: flip, crop, jitter."""
from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F

from nmeplib.data import loaders
from nmeplib.data.augment import ERASE_AREA, JITTER, Augment, colour_jitter, parse_augment, random_crop, random_flip
from nmeplib.data.loaders import TensorLoader
from nmeplib.runtime import generator

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
N = 2000
LOW, HIGH = 888, 1112   # Binomial(2000, 1/2) within 5 standard deviations (22.4) of 1000


def images(n: int = N, size: int = 8, device: str = "cpu", seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(1, 256, (n, 3, size, size), dtype=torch.uint8, generator=gen).to(device)  # 0: erased


def mirrored(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Which outputs are their input mirrored; fails unless every other one is its input unchanged."""
    same = (out == x).flatten(1).all(1)
    flipped = (out == x.flip(3)).flatten(1).all(1)
    assert (same ^ flipped).all(), "an image is neither itself nor its mirror image"
    return flipped


def crop_offsets(x: torch.Tensor, out: torch.Tensor, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each output's (dy, dx) in -pad..pad as a window of the reflect-padded input, and whether it
    is that window mirrored; fails unless every output is exactly one such window."""
    h, w = x.shape[-2:]
    padded = F.pad(x.float(), (pad,) * 4, mode="reflect").to(x.dtype)
    offsets = torch.full((len(x), 2), 99, dtype=torch.long, device=x.device)
    flipped = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    matches = torch.zeros(len(x), dtype=torch.long, device=x.device)
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            window = padded[:, :, dy:dy + h, dx:dx + w]
            for mirror in (False, True):
                hit = (out == (window.flip(3) if mirror else window)).flatten(1).all(1)
                offsets[hit, 0], offsets[hit, 1] = dy - pad, dx - pad
                flipped |= hit & mirror
                matches += hit
    assert (matches == 1).all(), "an output is not exactly one shifted window of its padded input"
    return offsets, flipped


def all_offsets(offsets: torch.Tensor, pad: int) -> bool:
    seen = {tuple(o) for o in offsets.tolist()}
    return seen == {(dy, dx) for dy in range(-pad, pad + 1) for dx in range(-pad, pad + 1)}


def identity_augment(spec: str, size: int = 8) -> Augment:
    """``spec`` with mean 0, std 1 and no resize: the output times 255 is the augmented uint8 image."""
    return Augment(spec, (0.0,) * 3, (1.0,) * 3, img_size=size)


def as_uint8(x: torch.Tensor) -> torch.Tensor:
    return (x * 255).round().to(torch.uint8)


@pytest.mark.parametrize("device", DEVICES)
def test_flip_mirrors_about_half_and_nothing_else(device):
    x = images(device=device)
    out = random_flip(x, generator(torch.device(device), 0))
    assert out.dtype == torch.uint8 and out.shape == x.shape
    assert LOW <= int(mirrored(x, out).sum()) <= HIGH
    again = random_flip(x, generator(torch.device(device), 0))
    assert torch.equal(out, again)                      # the same generator state, the same flips


@pytest.mark.parametrize("device", DEVICES)
def test_crop_covers_every_offset_and_is_a_shifted_window(device):
    x = images(device=device)
    out = random_crop(x, 2, generator(torch.device(device), 1))
    assert out.dtype == torch.uint8 and out.shape == x.shape
    offsets, flipped = crop_offsets(x, out, 2)
    assert all_offsets(offsets, 2) and not flipped.any()
    assert (offsets == 0).all(1).sum() < N / 20         # not mostly uncropped


@pytest.mark.parametrize("device", DEVICES)
def test_crop_with_flip_flips_about_half(device):
    x = images(device=device)
    offsets, flipped = crop_offsets(x, random_crop(x, 2, generator(torch.device(device), 2), flip=True), 2)
    assert all_offsets(offsets, 2) and LOW <= int(flipped.sum()) <= HIGH
    assert all_offsets(offsets[flipped], 2) and all_offsets(offsets[~flipped], 2)   # drawn independently


@pytest.mark.parametrize("spec", ["crop+flip", "flip+crop", "standard", "crop+flip+erase"])
def test_augment_crop_and_flip_together_still_flips(spec):
    x = images()
    out = identity_augment(spec)(x, generator(torch.device("cpu"), 3))
    if "erase" in spec:    # erasing zeroes a rectangle: compare the images it left alone
        kept = (out != 0).flatten(1).all(1)
        assert kept.sum() > N / 3
        x, out = x[kept], out[kept]
    offsets, flipped = crop_offsets(x, as_uint8(out), 1)   # 8 px images: pad 1
    assert all_offsets(offsets, 1)
    assert 0.44 < float(flipped.float().mean()) < 0.56


@pytest.mark.parametrize("spec, flips, crops", [("flip", True, False), ("crop", False, True), ("none", False, False)])
def test_augment_applies_only_the_named_components(spec, flips, crops):
    x = images()
    out = as_uint8(identity_augment(spec)(x, generator(torch.device("cpu"), 4)))
    offsets, flipped = crop_offsets(x, out, 1)
    assert LOW <= int(flipped.sum()) <= HIGH if flips else not flipped.any()
    assert all_offsets(offsets, 1) if crops else (offsets == 0).all()


def factors(x: torch.Tensor, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Brightness, contrast and saturation of each image recovered from colour_jitter's documented map
    ``out = b*c*s*x + b*c*(1-s)*grey(x) + b*(1-c)*mean(grey(x))``."""
    def grey(t):
        return (t * torch.tensor([0.299, 0.587, 0.114], device=t.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
    g, g_out = grey(x), grey(out)
    b = g_out.mean((1, 2, 3)) / g.mean((1, 2, 3))                 # grey means scale by b
    centred, centred_out = g - g.mean((2, 3), keepdim=True), g_out - g_out.mean((2, 3), keepdim=True)
    c = (centred_out * centred).sum((1, 2, 3)) / (centred ** 2).sum((1, 2, 3)) / b
    colour, colour_out = x - g, out - g_out
    s = (colour_out * colour).sum((1, 2, 3)) / (colour ** 2).sum((1, 2, 3)) / (b * c)
    return b, c, s


@pytest.mark.parametrize("device", DEVICES)
def test_jitter_factors_stay_within_their_bounds(device):
    gen = torch.Generator().manual_seed(5)
    x = (0.45 + 0.1 * torch.rand(N, 3, 6, 6, generator=gen)).to(device)   # no clamping at any factor
    out = colour_jitter(x, generator(torch.device(device), 5))
    assert out.shape == x.shape and out.dtype == torch.float32
    assert 0 < float(out.min()) and float(out.max()) < 1
    for f in factors(x, out):
        assert float(f.min()) >= 1 - JITTER - 1e-3 and float(f.max()) <= 1 + JITTER + 1e-3
        assert float(f.min()) < 1 - JITTER + 0.02 and float(f.max()) > 1 + JITTER - 0.02   # the whole range
    b, c, s = factors(x, out)
    assert not torch.allclose(b, c, atol=0.05) and not torch.allclose(c, s, atol=0.05)  # drawn separately


def test_jitter_output_stays_in_pixel_range():
    x = images(size=6).float() / 255
    out = colour_jitter(x, generator(torch.device("cpu"), 6))
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    via_augment = identity_augment("jitter")(images(size=8), generator(torch.device("cpu"), 6))
    assert float(via_augment.min()) >= 0 and float(via_augment.max()) <= 1


@pytest.mark.parametrize("spec", ["none", "crop+flip"])
def test_tensor_loader_chunks_give_the_batches_of_the_epochs_order(monkeypatch, spec):
    """Augmenting many batches at once changes neither the batches' order nor their contents
    beyond the augmentation's own draws."""
    images = torch.randint(0, 256, (50, 3, 8, 8), dtype=torch.uint8)
    aug = Augment(spec, (0.5,) * 3, (0.25,) * 3, 8)

    def epoch(chunk_bytes: int) -> list:
        monkeypatch.setitem(loaders.CHUNK_BYTES, "cpu", chunk_bytes)
        loader = TensorLoader(images, torch.arange(50), 8, aug, shuffle=True, drop_last=True, seed=3)
        loader.set_epoch(1)
        return list(loader)

    per_batch, one_chunk = epoch(1), epoch(2**30)
    assert [len(y) for _, y in per_batch] == [len(y) for _, y in one_chunk] == [8] * 6
    for (x1, y1), (x2, y2) in zip(per_batch, one_chunk):
        assert torch.equal(y1, y2)
        if spec == "none":
            assert torch.equal(x1, x2) and torch.allclose(x1, (images[y1] / 255 - 0.5) / 0.25, atol=1e-5)
    assert torch.equal(epoch(2**30)[0][0], one_chunk[0][0])   # reproducible


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("spec", ["crop", "flip", "crop+flip", "jitter", "erase", "jitter+flip+erase"])
def test_every_draw_comes_from_the_given_generator(device, spec):
    """The same generator seed gives the same augmentation whatever the global RNG did in
    between: what makes a resumed epoch equal an uninterrupted one."""
    x, aug, outs = images(64, device=device), identity_augment(spec), []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        if device == "cuda":
            torch.cuda.manual_seed(global_seed)
        outs.append(aug(x, generator(torch.device(device), 7)))
    assert torch.equal(outs[0], outs[1])
    assert not torch.equal(outs[0], aug(x, generator(torch.device(device), 8)))   # and it does draw


def test_augment_crops_with_an_eighth_of_the_side_as_padding():
    x = images(400, size=32, seed=3)
    offsets, flipped = crop_offsets(x, as_uint8(identity_augment("crop", 32)(x, generator(torch.device("cpu"), 0))),
                                    pad=4)
    assert all_offsets(offsets, 4) and not flipped.any()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("size", [8, 16])
def test_erase_blanks_one_rectangle_in_about_half_the_images(device, size):
    x = images(N, size=size, device=device)
    out = identity_augment("erase", size)(x, generator(torch.device(device), 0))
    erased = (as_uint8(out) == 0).all(1)                      # N,h,w: pixels blanked in every channel
    assert torch.equal(as_uint8(out)[~erased[:, None].expand_as(out)], x[~erased[:, None].expand_as(out)])
    hit = erased.flatten(1).any(1)
    assert LOW <= int(hit.sum()) <= HIGH                       # ERASE_P = 1/2
    boxes = []
    for mask in erased[hit].cpu():
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        h, w = len(rows), len(cols)
        assert mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all() and int(mask.sum()) == h * w   # a rectangle
        assert 1 <= h * w <= ERASE_AREA[1] * size * size and max(h / w, w / h) <= math.exp(1.2) * 2
        boxes.append((int(rows[0]), int(cols[0]), h, w))
    top, left, h, w = (torch.tensor(v) for v in zip(*boxes))
    areas = (h * w).float() / size ** 2
    assert areas.max() > 0.5 * ERASE_AREA[1] and areas.min() < 2 * ERASE_AREA[0]   # the whole range is drawn
    assert (h > w).any() and (w > h).any() and h.min() == 1 and w.min() == 1          # tall, wide, and thin ones
    assert (top > 0).any() and (left > 0).any()                                       # anywhere in the image,
    for start, length in ((top, h), (left, w)):                                       # up to either edge alike
        first, last = int((start == 0).sum()), int((start + length == size).sum())
        assert last > 0 and abs(first - last) < 5 * math.sqrt(first + last)


def test_erase_blanks_at_least_one_pixel_whenever_it_fires(monkeypatch):
    import nmeplib.data.augment as augment

    monkeypatch.setattr(augment, "ERASE_P", 1.0)
    out = identity_augment("erase", 8)(images(N, size=8), generator(torch.device("cpu"), 3))
    assert (as_uint8(out) == 0).all(1).flatten(1).any(1).all()


@pytest.mark.parametrize("spec, named", [("crop+twirl", "twirl"), ("twirl+crop+spin", "twirl, spin"), ("", "''"),
                                         ("+", "'+'")])
def test_unknown_augmentation_names_it_and_the_choices(spec, named):
    with pytest.raises(ValueError, match=rf"^unknown augmentation {re.escape(named)}; use one of none, course, "
                                         rf"standard or components crop, flip, jitter, erase, .* joined by '\+'$"):
        parse_augment(spec)


def test_two_policies_are_refused_by_name():
    with pytest.raises(ValueError, match=r"^'autoaugment\+randaugment' names more than one of autoaugment, "
                                         r"randaugment, trivialaugment$"):
        parse_augment("autoaugment+randaugment")


def test_shrinking_averages_away_detail():
    """Resizing down is antialiased: 64 px noise shrunk to 16 px is close to its mean, not a
    sample of every fourth pixel."""
    noise = images(16, size=64, seed=5)
    out = Augment("none", (0.0,) * 3, (1.0,) * 3, img_size=16, train=False)(noise)
    assert out.shape == (16, 3, 16, 16)
    assert abs(float(out.mean()) - float(noise.float().mean() / 255)) < 0.01 and float(out.std()) < 0.1


@pytest.mark.parametrize("src, size", [(32, 70), (64, 16)])
def test_resize_matches_torchvision_resize(src, size):
    """Up (AlexNet's 70 px) and down, the batched resize is torchvision's ``Resize``, the one a
    per-image pipeline would use."""
    from torchvision.transforms.v2 import functional as TF

    x = images(8, size=src, seed=2)
    out = Augment("none", (0.0,) * 3, (1.0,) * 3, img_size=size, train=False)(x)
    want = TF.resize(x.float() / 255, [size, size], antialias=True)
    assert out.shape == want.shape and torch.allclose(out, want, atol=1e-5)


def test_jitter_keeps_the_pixel_scale():
    """Colour jitter works on [0, 1] images and scales back: on average it moves the normalised
    values little (its factors have mean 1; clamping bright pixels at 1 costs about 0.04 here),
    whatever it does to each image."""
    x = images(N, size=8, seed=4)
    gen = generator(torch.device("cpu"), 0)
    jittered = Augment("jitter", (0.5,) * 3, (0.25,) * 3, 8)(x, gen)
    plain = Augment("none", (0.5,) * 3, (0.25,) * 3, 8)(x)
    assert abs(float(jittered.mean()) - float(plain.mean())) < 0.1


def test_the_jitter_path_normalises_exactly_like_the_plain_one(monkeypatch):
    """With the jitter itself made the identity, an augmented batch equals the plain one."""
    import nmeplib.data.augment as augment

    monkeypatch.setattr(augment, "colour_jitter", lambda x, gen: x)
    x = images(64, size=8, seed=5)
    jittered = Augment("jitter", (0.5,) * 3, (0.25,) * 3, 8)(x, generator(torch.device("cpu"), 0))
    torch.testing.assert_close(jittered, Augment("none", (0.5,) * 3, (0.25,) * 3, 8)(x), rtol=0, atol=1e-6)


def test_only_images_of_another_size_are_resized(monkeypatch):
    calls, real = [], F.interpolate
    monkeypatch.setattr(F, "interpolate", lambda x, **kw: calls.append(tuple(x.shape[-2:])) or real(x, **kw))
    assert identity_augment("none", 8)(images(4, size=8)).shape[-2:] == (8, 8) and calls == []
    assert identity_augment("none", 8)(images(4, size=16)).shape[-2:] == (8, 8) and calls == [(16, 16)]
