"""Tracker and W&B mode handling, offline only: nothing here may reach the network."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

import nmeplib
from nmeplib.config import ConfigError, load_config
from nmeplib.checkpoint import write_jsonl as write_jsonl_atomic
from nmeplib.tracking import Tracker, is_logged_in, read_metrics, resolve_mode


@pytest.fixture(autouse=True)
def wandb_env(tmp_path, monkeypatch):
    """No credentials and every W&B folder inside tmp_path."""
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb_home"))
    monkeypatch.setenv("WANDB_SILENT", "true")


def rows(epochs):
    return [{"epoch": e, "lr": 1e-3, "train_loss": 1.0 / e, "train_acc": 90.0 + e + 0.125,
             "val_loss": 1.5 / e, "val_acc": 80.0 + e + 0.375} for e in epochs]


def test_resolve_mode_precedence(tmp_path, monkeypatch):
    assert resolve_mode() == "offline"  # not logged in
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password abc\n")
    assert resolve_mode() == "online"
    (tmp_path / "netrc").unlink()
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_mode() == "online"
    assert resolve_mode("") == "online"  # empty config value defers
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_mode() == "disabled"
    assert resolve_mode("OFFLINE") == "offline"  # explicit beats the environment


@pytest.mark.parametrize("env, arg", [("", "dryrun"), ("sometimes", None)])
def test_resolve_mode_rejects_bad_values(monkeypatch, env, arg):
    monkeypatch.setenv("WANDB_MODE", env)
    with pytest.raises(ValueError, match=r"(dryrun|sometimes).*online, offline, disabled"):
        resolve_mode(arg)


def test_write_and_read_metrics(tmp_path):
    write_jsonl_atomic(tmp_path / "m.jsonl", rows([1, 2]))
    assert read_metrics(tmp_path / "m.jsonl") == rows([1, 2])
    assert [p.name for p in tmp_path.iterdir()] == ["m.jsonl"]  # no temp file left behind
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1}\nnot json\n')
    with pytest.raises(ValueError, match="line 2"):
        read_metrics(tmp_path)


def test_offline_run_logs_to_wandb_folder_and_jsonl(tmp_path, capsys):
    config = load_config(overrides={"WANDB.PROJECT": "tests"})
    out = tmp_path / "run1"
    with Tracker(config, out, mode="offline") as tracker:
        for row in rows([1, 2, 3]):
            tracker.log_epoch(row)
        tracker.log_summary(test_acc=77.25)
        run_dir = tracker.run_dir
    assert run_dir.parent == out / "wandb" and run_dir.name.startswith("offline-run-")
    assert read_metrics(out) == rows([1, 2, 3])
    # Values are stored as JSON text in the run's .wandb log, which wandb's service process
    # finishes writing a moment after run.finish() returns.
    expected = [b"epoch", b"train_loss", b"test_acc", b"tests"] + [
        json.dumps(row["val_acc"]).encode() for row in rows([1, 2, 3])]
    deadline = time.monotonic() + 10
    while True:
        data = b"".join(p.read_bytes() for p in run_dir.glob("*.wandb"))
        if all(key in data for key in expected) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert [key for key in expected if key not in data] == []
    assert f"wandb sync {run_dir}" in capsys.readouterr().out


def test_disabled_mode_writes_only_jsonl(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    tracker = Tracker(load_config(), tmp_path / "run")
    tracker.log_epoch(rows([1])[0])
    tracker.finish()
    assert tracker.run_dir is None
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["metrics.jsonl"]


def test_wandb_failure_keeps_jsonl(tmp_path, monkeypatch):
    import wandb

    def broken_init(*args, **kwargs):
        raise RuntimeError("no network")

    monkeypatch.setattr(wandb, "init", broken_init)
    with pytest.warns(RuntimeWarning, match="no network"):
        tracker = Tracker(load_config(), tmp_path, mode="offline")
    with tracker:
        tracker.log_epoch(rows([1])[0])
    assert tracker.run_dir is None and tracker.mode == "disabled"
    assert read_metrics(tmp_path) == rows([1])


def test_resume_rows_continue_the_file(tmp_path):
    write_jsonl_atomic(tmp_path / "metrics.jsonl", rows([1, 2, 3]))
    resumed = read_metrics(tmp_path)[:2]  # the checkpoint was saved after epoch 2
    with Tracker(load_config(), tmp_path, mode="disabled", resume_rows=resumed) as tracker:
        tracker.log_epoch(rows([3])[0])
        tracker.log_epoch(rows([4])[0])
    assert read_metrics(tmp_path) == rows([1, 2, 3, 4])


def test_disabled_tracker_writes_nothing(tmp_path):
    with Tracker(load_config(), tmp_path / "rank1", mode="offline", enabled=False) as tracker:
        tracker.log_epoch(rows([1])[0])
        tracker.log_summary(test_acc=1.0)
    assert tracker.run_dir is None
    assert not (tmp_path / "rank1").exists()


def test_online_without_login_goes_offline(tmp_path):
    with pytest.warns(RuntimeWarning, match="not logged in"):
        tracker = Tracker(load_config(), tmp_path / "run", mode="online")
    with tracker:
        assert tracker.mode == "offline"
        tracker.log_epoch(rows([1])[0])
    assert tracker.run_dir is not None and tracker.run_dir.is_dir()


def test_login_is_looked_up_for_the_configured_wandb_host(tmp_path, monkeypatch):
    (tmp_path / "netrc").write_text("machine wandb.example.org\n  login user\n  password abc\n")
    assert is_logged_in() is False          # no entry for api.wandb.ai
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.org")
    assert is_logged_in() is True


@pytest.mark.parametrize("env, arg, message", [
    ("", "dryrun", "invalid W&B mode 'dryrun': use one of online, offline, disabled"),
    ("sometimes", None, "invalid W&B WANDB_MODE 'sometimes': use one of online, offline, disabled")])
def test_a_bad_mode_names_where_it_came_from(monkeypatch, env, arg, message):
    monkeypatch.setenv("WANDB_MODE", env)
    with pytest.raises(ConfigError) as err:
        resolve_mode(arg)
    assert str(err.value) == message


class FakeRun:
    def __init__(self, run_dir):
        self.dir, self.url = str(run_dir / "files"), "https://wandb.example.org/run"
        self.metrics, self.logged, self.summary, self.exit_codes = [], [], {}, []

    def define_metric(self, name, **kwargs):
        self.metrics.append((name, kwargs))

    def log(self, data, step=None):
        self.logged.append(data)

    def finish(self, exit_code=0):
        self.exit_codes.append(exit_code)


@pytest.fixture
def fake_wandb(monkeypatch, tmp_path):
    """wandb.init replaced: records its keywords and returns a FakeRun."""
    import wandb

    started = []

    def init(**kwargs):
        started.append((kwargs, FakeRun(tmp_path / "wandb" / "run-1")))
        return started[-1][1]

    monkeypatch.setattr(wandb, "init", init)
    return started


def test_online_without_login_warns_at_the_callers_line(tmp_path, fake_wandb):
    with pytest.warns(RuntimeWarning) as caught:
        Tracker(load_config(), tmp_path / "run", mode="online").finish()
    assert [str(w.message) for w in caught] == [
        "W&B: not logged in (run `wandb login` or set WANDB_API_KEY); logging offline instead"]
    assert Path(nmeplib.__file__).parent not in Path(caught[0].filename).parents   # the caller's line, not nmeplib's
    (kwargs, _), = fake_wandb
    assert kwargs["mode"] == "offline"


def test_a_run_starts_with_the_configs_wandb_settings(tmp_path, fake_wandb):
    config = load_config(overrides={"WANDB.PROJECT": "tests", "WANDB.ENTITY": "course", "WANDB.GROUP": "lenets",
                                    "WANDB.NAME": "first"})
    with Tracker(config, tmp_path / "run", mode="offline") as tracker:
        tracker.log_epoch(rows([1])[0])
    (kwargs, run), = fake_wandb
    settings = kwargs.pop("settings")
    assert kwargs == {"project": "tests", "entity": "course", "group": "lenets", "name": "first",
                      "config": config.to_dict(), "dir": str(tmp_path / "run"), "mode": "offline",
                      "reinit": "finish_previous"}
    assert settings.silent is True and settings.init_timeout == 30.0
    assert run.metrics == [("epoch", {}), ("*", {"step_metric": "epoch"})]
    assert run.logged == rows([1]) and run.exit_codes == [0]
    assert tracker.run_dir == tmp_path / "wandb" / "run-1"


def test_an_unnamed_run_is_named_after_its_folder(tmp_path, fake_wandb):
    Tracker(load_config(), tmp_path / "lenet-lr3", mode="offline").finish()
    (kwargs, _), = fake_wandb
    assert (kwargs["name"], kwargs["entity"], kwargs["group"]) == ("lenet-lr3", None, None)


def test_a_run_ended_by_an_error_is_marked_failed(tmp_path, fake_wandb):
    with pytest.raises(KeyError):
        with Tracker(load_config(), tmp_path / "run", mode="offline"):
            raise KeyError("boom")
    (_, run), = fake_wandb
    assert run.exit_codes == [1]


def test_a_tracker_of_another_rank_is_disabled(tmp_path, fake_wandb):
    tracker = Tracker(load_config(), tmp_path / "rank1", mode="online", enabled=False)
    assert tracker.mode == "disabled" and tracker.run is None and fake_wandb == []
