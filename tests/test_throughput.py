"""Throughput measurement on the CPU, and the out-of-memory path with a simulated CUDA OOM."""
from __future__ import annotations

import json

import pytest
import torch

from nmeplib import throughput
from nmeplib.models import build_model
from nmeplib.throughput import largest_fitting_batch, measure_throughput

QUICK = dict(img_size=32, device="cpu", warmup_steps=1, timed_steps=2)


def test_lenet_on_cpu_doubles_batch_size_up_to_the_cap():
    rows = measure_throughput("lenet", max_batch_size=16, **QUICK)
    assert [r["batch_size"] for r in rows] == [1, 2, 4, 8, 16]
    assert all(r["img_per_s"] > 0 and r["step_ms"] > 0 and r["peak_mem_mb"] > 0 and not r["oom"] for r in rows)
    assert largest_fitting_batch(rows) == 16


def test_out_of_memory_ends_the_measurement(monkeypatch):
    run_steps = throughput._run_steps

    def fake(model, optimizer, x, y, steps):
        if len(x) >= 8:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return run_steps(model, optimizer, x, y, steps)

    monkeypatch.setattr(throughput, "_run_steps", fake)
    model = build_model("lenet", 10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rows = measure_throughput(model, max_batch_size=64, **QUICK)
    assert [(r["batch_size"], r["oom"]) for r in rows] == [(1, False), (2, False), (4, False), (8, True)]
    assert rows[-1]["img_per_s"] is None
    assert largest_fitting_batch(rows) == 4
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # the caller's model is untouched
    assert all(p.grad is None for p in model.parameters())


def test_explicit_batch_sizes_and_bad_image_size():
    rows = measure_throughput("lenet", batch_sizes=[3, 5], **QUICK)
    assert [r["batch_size"] for r in rows] == [3, 5]
    assert largest_fitting_batch([]) is None
    with pytest.raises(ValueError, match="cannot take 64x64"):
        measure_throughput("lenet", **{**QUICK, "img_size": 64})


def test_command_line(tmp_path, capsys):
    out = tmp_path / "lenet.json"
    assert throughput.main(["--model", "lenet", "--max-batch-size", "2", "--device", "cpu", "--warmup-steps", "0",
                            "--timed-steps", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "lenet, 32 px" in printed and "img_per_s" in printed
    assert [r["batch_size"] for r in json.loads(out.read_text())] == [1, 2]
