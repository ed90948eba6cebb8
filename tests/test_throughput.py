"""The batch-size sweep (training throughput per batch size) on the CPU, and the out-of-memory path
with a simulated CUDA OOM."""
from __future__ import annotations

import json
import os

import pytest
import torch

from nmeplib import throughput
from nmeplib.models import build_model
from nmeplib.throughput import format_row, largest_fitting_batch, measure_throughput

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


def test_rows_arrive_one_at_a_time(monkeypatch):
    """Each row reaches the callback (and the generator's consumer) before the next size starts."""
    monkeypatch.delenv("NMEPLIB_PROGRESS", raising=False)
    events = []
    run_steps = throughput._run_steps

    def logged(model, optimizer, x, y, steps):
        events.append(("step", len(x)))
        return run_steps(model, optimizer, x, y, steps)

    monkeypatch.setattr(throughput, "_run_steps", logged)
    rows = measure_throughput("lenet", batch_sizes=[2, 4, 8], **QUICK,
                              callback=lambda row: events.append(("row", row["batch_size"])))
    assert [r["batch_size"] for r in rows] == [2, 4, 8]
    order = [e for i, e in enumerate(events) if i == 0 or e != events[i - 1]]  # consecutive steps merged
    assert order == [("step", 2), ("row", 2), ("step", 4), ("row", 4), ("step", 8), ("row", 8)]

    events.clear()
    sweep = throughput.iter_throughput("lenet", batch_sizes=[2, 4], **QUICK)
    first = next(sweep)
    assert first["batch_size"] == 2 and ("step", 4) not in events
    assert "NMEPLIB_PROGRESS" not in os.environ   # the consumer runs with its own settings
    assert [r["batch_size"] for r in sweep] == [4]


def test_the_engine_shows_no_progress_bar_for_the_timed_steps(monkeypatch):
    from nmeplib import engine

    shown, real = [], engine.progress
    monkeypatch.setattr(engine, "progress", lambda *args, **kwargs: shown.append(kwargs.get("show")) or
                        real(*args, **kwargs))
    measure_throughput("lenet", batch_sizes=[2], **QUICK)
    assert shown and not any(shown)


def test_command_line_prints_each_row_as_it_is_measured(monkeypatch):
    events = []

    class Out:
        def write(self, text):
            events.append(("out", text))
            return len(text)

        def flush(self):
            pass

    run_steps = throughput._run_steps

    def logged(model, optimizer, x, y, steps):
        events.append(("step", len(x)))
        return run_steps(model, optimizer, x, y, steps)

    monkeypatch.setattr(throughput, "_run_steps", logged)
    monkeypatch.setattr("sys.stdout", Out())
    assert throughput.main(["--model", "lenet", "--max-batch-size", "4", "--device", "cpu", "--warmup-steps", "0",
                            "--timed-steps", "1"]) == 0
    first_step_at_4 = events.index(("step", 4))
    printed_before = "".join(text for kind, text in events[:first_step_at_4] if kind == "out")
    lines = printed_before.splitlines()
    assert "img_per_s" in lines[1] and len(lines) == 4, printed_before     # title, header, rows for 1 and 2
    assert lines[2].split()[0] == "1" and lines[3].split()[0] == "2"


class FakeClock:
    """A clock that only the fake training steps move: batch size b takes b ms per step."""

    def __init__(self):
        self.t = 0.0
        self.calls = []

    def __call__(self):
        return self.t

    def run_steps(self, model, optimizer, x, y, steps):
        seconds = 0.001 * len(x) * steps
        self.t += seconds
        self.calls.append((len(x), steps))
        return seconds


@pytest.mark.parametrize("budget, expected", [
    # budget 1 s, up to 2 warm-up + 5 timed steps: batch 160 (0.16 s a step) has 0.52 s left after
    # two warm-up and one timed step, room for three more; batch 256 (0.256 s a step) warms twice
    # and then times one step; batch 1024 stops warming after one step (half the budget is gone).
    (1.0, {1: (7, 5), 64: (7, 5), 160: (6, 4), 256: (3, 1), 1024: (2, 1)}),
    (0.0, {1: (2, 1), 64: (2, 1), 256: (2, 1), 1024: (2, 1)}),   # no budget: one warm-up, one timed step
])
def test_time_budget_per_batch_size(monkeypatch, budget, expected):
    clock = FakeClock()
    monkeypatch.setattr(throughput, "_now", clock)
    monkeypatch.setattr(throughput, "_run_steps", clock.run_steps)
    spent = {}

    def note(row):
        spent[row["batch_size"]] = clock.t - sum(spent.values())

    rows = measure_throughput("lenet", img_size=32, device="cpu", batch_sizes=list(expected), warmup_steps=2,
                              timed_steps=5, seconds_per_size=budget, callback=note)
    steps = {b: sum(n for size, n in clock.calls if size == b) for b in expected}
    assert {r["batch_size"]: (steps[r["batch_size"]], r["steps"]) for r in rows} == expected
    for row in rows:
        assert row["img_per_s"] == pytest.approx(1000.0)   # b images in b ms
        assert row["step_ms"] == pytest.approx(row["batch_size"])
        # a size ends within its budget, or after one warm-up and one timed step when one step is longer
        assert spent[row["batch_size"]] <= max(budget, 0.002 * row["batch_size"]) + 1e-9
    with pytest.raises(ValueError, match="seconds_per_size"):
        measure_throughput("lenet", img_size=32, device="cpu", seconds_per_size=-1)


def test_out_of_memory_frees_memory_and_training_goes_on(monkeypatch):
    """A simulated CUDA OOM inside a training step at batch 8: the sweep stops with an OOM row,
    the batch and the model copy are gone by the time that row is reported, and training works."""
    import weakref

    from nmeplib.engine import run_epoch

    batches, copies = [], []

    class RunsOutAt8(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = build_model("lenet", 10)

        def forward(self, x):
            out = self.net(x)
            if len(x) >= 8:
                batches.append(weakref.ref(x))
                copies.append(weakref.ref(self))
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return out

    reported = []

    def callback(row):
        reported.append(row)
        if row["oom"]:
            assert batches and all(ref() is None for ref in batches + copies), "the OOM batch is still alive"

    rows = measure_throughput(RunsOutAt8(), max_batch_size=64, callback=callback, **QUICK)
    assert [(r["batch_size"], r["oom"]) for r in rows] == [(1, False), (2, False), (4, False), (8, True)]
    assert reported == rows and rows[-1]["steps"] == 0
    assert torch.is_grad_enabled()
    model = build_model("lenet", 10)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    first = run_epoch(model, [(x, y)], torch.device("cpu"), optimizer=optimizer)["loss"]
    later = run_epoch(model, [(x, y)] * 5, torch.device("cpu"), optimizer=optimizer)["loss"]
    assert later < first


def test_a_real_error_is_not_taken_for_out_of_memory(monkeypatch):
    def broken(model, optimizer, x, y, steps):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(throughput, "_run_steps", broken)
    with pytest.raises(RuntimeError, match="shapes"):
        measure_throughput("lenet", max_batch_size=4, **QUICK)


def test_format_row_prints_rows_as_they_come():
    rows = [{"batch_size": b, "img_per_s": 100.0 * b, "step_ms": 10.0, "peak_mem_mb": 5.0 * b, "steps": 5,
             "oom": False} for b in (1, 2, 4)] + [{"batch_size": 8, "img_per_s": None, "step_ms": None,
                                                  "peak_mem_mb": None, "steps": 0, "oom": True}]
    lines = [format_row(), *map(format_row, rows)]   # the header, then one line per row
    assert "img_per_s" in lines[0] and lines[1].split()[0] == "1" and lines[-1].split()[-1] == "yes"


def _fake_sweep(calls, rows, interrupt=False):
    def measure(model, **kwargs):
        calls.append((model, kwargs))
        for row in rows:
            kwargs["callback"](row)
        if interrupt:
            raise KeyboardInterrupt
        return rows
    return measure


def _row(batch_size, oom=False):
    return {"batch_size": batch_size, "img_per_s": None if oom else 10.0 * batch_size,
            "step_ms": None if oom else 100.0, "peak_mem_mb": None if oom else 3.0, "steps": 0 if oom else 2,
            "oom": oom}


def test_command_line_passes_its_options_and_names_the_largest_batch_that_fits(monkeypatch, capsys, tmp_path):
    calls = []
    rows = [_row(1), _row(2), _row(4), _row(8, oom=True)]
    monkeypatch.setattr(throughput, "measure_throughput", _fake_sweep(calls, rows))
    out = tmp_path / "alexnet.csv"
    assert throughput.main(["--model", "alexnet", "--img-size", "70", "--num-classes", "5", "--max-batch-size", "8",
                            "--optimizer", "sgd", "--warmup-steps", "0", "--timed-steps", "3",
                            "--seconds-per-size", "0.5", "--device", "cpu", "--out", str(out)]) == 0
    [(model, kwargs)] = calls
    assert callable(kwargs.pop("callback"))
    assert (model, kwargs) == ("alexnet", {"img_size": 70, "num_classes": 5, "max_batch_size": 8,
                                           "device": torch.device("cpu"), "optimizer": "sgd", "warmup_steps": 0,
                                           "timed_steps": 3, "seconds_per_size": 0.5})
    assert capsys.readouterr().out.splitlines() == [
        "alexnet, 70 px, sgd, cpu", format_row(), *map(format_row, rows), "largest batch size that fits: 4",
        f"wrote {out}"]
    assert out.read_text().splitlines()[0].split(",") == list(throughput.COLUMNS)


def test_command_line_defaults_and_a_sweep_without_out_of_memory(monkeypatch, capsys):
    calls = []
    rows = [_row(1), _row(2)]
    monkeypatch.setattr(throughput, "measure_throughput", _fake_sweep(calls, rows))
    assert throughput.main(["--device", "cpu"]) == 0
    [(model, kwargs)] = calls
    kwargs.pop("callback")
    assert (model, kwargs) == ("lenet", {"img_size": 32, "num_classes": 10, "max_batch_size": None,
                                         "device": torch.device("cpu"), "optimizer": "adamw", "warmup_steps": 2,
                                         "timed_steps": 5, "seconds_per_size": throughput.SECONDS_PER_SIZE})
    assert capsys.readouterr().out.splitlines()[-1] == "no out-of-memory up to batch size 2"
    monkeypatch.setattr(throughput, "measure_throughput", _fake_sweep([], [_row(1)], interrupt=True))
    assert throughput.main(["--device", "cpu"]) == 130
    assert capsys.readouterr().out.splitlines()[-1] == "interrupted; largest batch size measured: 1"
