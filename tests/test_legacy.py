"""Configs of the old course code: every old key translated or named in one notice, BASE across old
files, a one-epoch run on the bundled digits, and new-style files as strict as before."""
import json
import warnings

import pytest
import yaml

from nmeplib import legacy
from nmeplib.cli import main
from nmeplib.config import VALID_KEYS, ConfigError, load_config
from nmeplib.legacy import OldConfigWarning

# The old course repository's lenet_base.yaml, every key as it was (NUM_CLASSES 200 on CIFAR-10 too).
OLD_LENET = """\
AUG:
  COLOR_JITTER: 0.4
DATA:
  BATCH_SIZE: 256
  DATASET: "cifar10"
  IMG_SIZE: 32
  NUM_WORKERS: 32
  PIN_MEMORY: True
MODEL:
  NAME: lenet
  NUM_CLASSES: 200
  DROP_RATE: 0.0
TRAIN:
  EPOCHS: 50
  WARMUP_EPOCHS: 10
  LR: 3e-4
  MIN_LR: 3e-5
  WARMUP_LR: 3e-5
  LR_SCHEDULER:
    NAME: "cosine"
  OPTIMIZER:
    NAME: "adamw"
    EPS: 1e-8
    BETAS: (0.9, 0.999)
    MOMENTUM: 0.9
OUTPUT: "output/lenet_cifar"
SAVE_FREQ: 5
PRINT_FREQ: 99999
PRINT_FREQ: 99999
"""

# Every other key of the old config.py, in a child file that inherits the one above.
OLD_CHILD = {
    "BASE": ["lenet_base.yaml"],
    "DATA": {"DATASET": "digits", "DATA_PATH": "", "INTERPOLATION": "bicubic", "BATCH_SIZE": 64},
    "MODEL": {"NUM_CLASSES": 10, "RESUME": "", "DROP_RATE": 0.1},
    "TRAIN": {"START_EPOCH": 0, "EPOCHS": 1, "WARMUP_EPOCHS": 0, "WEIGHT_DECAY": 0.01, "LR": 1.0e-2,
              "ACCUMULATION_STEPS": 1, "LR_SCHEDULER": {"NAME": "Step", "DECAY_EPOCHS": 5, "DECAY_RATE": 0.5},
              "OPTIMIZER": {"NAME": "SGD", "MOMENTUM": 0.8}},
    "AUG": {"RAND_AUGMENT": "rand-m9-mstd0.5-inc1"},
    "TEST": {"CROP": True, "SEQUENTIAL": False, "SHUFFLE": False},
    "SEED": 3,
    "EVAL_MODE": False,
    "THROUGHPUT_MODE": False,
}

DROPPED = ["DATA.PIN_MEMORY", "TRAIN.OPTIMIZER.EPS", "TRAIN.OPTIMIZER.BETAS", "SAVE_FREQ",
           "PRINT_FREQ", "DATA.INTERPOLATION", "MODEL.RESUME", "TRAIN.START_EPOCH", "TRAIN.ACCUMULATION_STEPS",
           "TEST.CROP", "TEST.SEQUENTIAL", "TEST.SHUFFLE", "EVAL_MODE", "THROUGHPUT_MODE"]


@pytest.fixture
def old_files(tmp_path):
    (tmp_path / "lenet_base.yaml").write_text(OLD_LENET)
    (tmp_path / "digits_old.yaml").write_text(yaml.safe_dump(OLD_CHILD))
    return tmp_path


def load_with_notices(*args, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = load_config(*args, **kwargs)
    return config, [str(w.message) for w in caught if issubclass(w.category, OldConfigWarning)], \
        [str(w.message) for w in caught if not issubclass(w.category, OldConfigWarning)]


def test_old_lenet_config_translates_and_keeps_its_checks(old_files):
    with pytest.raises(ConfigError, match=r"TRAIN\.WARMUP_EPOCHS \(10\) must not exceed TRAIN\.EPOCHS \(5\)"):
        load_config(old_files / "lenet_base.yaml", ["TRAIN.EPOCHS=5"])  # caught as for any config
    config, notices, others = load_with_notices(old_files / "lenet_base.yaml")
    assert config.DATA.DATASET == "cifar10" and config.DATA.NUM_WORKERS == 32
    assert (config.TRAIN.LR, config.TRAIN.MIN_LR, config.TRAIN.WARMUP_EPOCHS) == (3e-4, 3e-5, 10)
    assert config.TRAIN.WARMUP_LR == 3e-5 and "TRAIN.WARMUP_LR" not in notices[0]
    assert (config.TRAIN.OPTIMIZER, config.TRAIN.MOMENTUM, config.TRAIN.SCHEDULER) == ("adamw", 0.9, "cosine")
    assert config.DATA.AUGMENT == "course" and config.MODEL.DROPOUT == 0.0 and config.OUTPUT == "output/lenet_cifar"
    assert config.MODEL.NUM_CLASSES == 200
    assert any("MODEL.NUM_CLASSES=200 but cifar10 has 10 classes" in text for text in others)
    [notice] = notices  # one line naming each dropped key once, with its reason
    assert "\n" not in notice
    for key in ["DATA.PIN_MEMORY", "TRAIN.OPTIMIZER.EPS", "TRAIN.OPTIMIZER.BETAS", "SAVE_FREQ",
                "PRINT_FREQ"]:
        assert notice.count(f"{key} (") == 1, key
    assert "PRINT_FREQ (progress is one line per epoch" in notice
    for translated in ["AUG.COLOR_JITTER", "TRAIN.LR_SCHEDULER.NAME", "TRAIN.OPTIMIZER.NAME", "MODEL.DROP_RATE"]:
        assert translated not in notice


def test_every_old_key_translated_across_base_files(old_files):
    config, notices, others = load_with_notices(old_files / "digits_old.yaml",
                                                ["TRAIN.OPTIMIZER.MOMENTUM=0.7", "PRINT_FREQ=1"])
    assert not others  # the child fixes NUM_CLASSES for digits
    assert config.DATA.DATASET == "digits" and config.DATA.ROOT == "" and config.DATA.BATCH_SIZE == 64
    assert (config.MODEL.NAME, config.MODEL.NUM_CLASSES, config.MODEL.DROPOUT) == ("lenet", 10, 0.1)
    assert (config.TRAIN.EPOCHS, config.TRAIN.LR, config.TRAIN.WEIGHT_DECAY) == (1, 1e-2, 0.01)
    assert (config.TRAIN.OPTIMIZER, config.TRAIN.MOMENTUM) == ("sgd", 0.7)  # names lower-cased; --opts last
    assert (config.TRAIN.SCHEDULER, config.TRAIN.DECAY_EPOCHS, config.TRAIN.DECAY_RATE) == ("step", 5, 0.5)
    assert config.DATA.AUGMENT == "jitter+flip+randaugment"  # the parent's jitter, the child's policy
    assert config.SEED == 3 and config.OUTPUT == "output/lenet_cifar"
    [notice] = notices
    for key in DROPPED:
        assert notice.count(f"{key} (") == 1, key
    assert set(config.flat()) == set(VALID_KEYS)


def test_every_listed_old_key_has_a_fate():
    fate = {}  # old key -> its new key, or "left out: <why>", as the translator decides
    for key in legacy.OLD_KEYS:
        assert key not in VALID_KEYS
        translator = legacy.Translator()
        translator.translate(key, None)
        fate[key] = translator.translated.get(key) or f"left out: {translator.dropped[key]}"
        assert fate[key]
    assert fate["DATA.DATA_PATH"] == "DATA.ROOT"
    assert fate["AUG.COLOR_JITTER"] == "DATA.AUGMENT"
    assert fate["SAVE_FREQ"].startswith("left out: ") and len(fate["SAVE_FREQ"]) > len("left out: ")


@pytest.mark.parametrize("aug, expected", [
    ({"COLOR_JITTER": 0.4}, "course"),
    ({"COLOR_JITTER": 0.0}, "flip"),
    ({"COLOR_JITTER": 0.4, "REPROB": 0.25}, "jitter+flip+erase"),
    ({"COLOR_JITTER": 0, "RAND_AUGMENT": "rand-m9-mstd0.5-inc1"}, "flip+randaugment"),
    ({"AUTO_AUGMENT": "v0"}, "flip+autoaugment"),
    ({"COLOR_JITTER": 0.4, "RAND_AUGMENT": ""}, "course"),
])
def test_aug_keys_become_one_augment(tmp_path, aug, expected):
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump({"AUG": aug, "DATA": {"PIN_MEMORY": True}}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert load_config(path).DATA.AUGMENT == expected


@pytest.mark.parametrize("tree, message", [
    ({"TRAIN": {"OPTIMIZER": {"NAME": "lamb"}}},
     r"TRAIN\.OPTIMIZER\.NAME \(old name of TRAIN\.OPTIMIZER\).*must be one of 'adamw'"),
    ({"TRAIN": {"LR_SCHEDULER": {"NAME": "multistep"}}}, r"TRAIN\.LR_SCHEDULER\.NAME .*TRAIN\.SCHEDULER must be one"),
    ({"AUG": {"RAND_AUGMENT": "augmix-m5"}}, r"AUG\.RAND_AUGMENT 'augmix-m5' has no counterpart"),
    ({"DATA": {"PIN_MEMORY": True, "DATA_PTH": "x"}},
     r"unknown config key 'DATA\.DATA_PTH'.*old-style.*DATA\.DATA_PATH"),
    ({"MODEL": {"DROP_RATE": 1.5}}, r"MODEL\.DROPOUT must be in \[0, 1\)"),
])
def test_bad_old_values_and_typos_still_fail(tmp_path, tree, message):
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump(tree))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ConfigError, match=message):
            load_config(path)


def test_empty_base_of_the_old_defaults(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text("BASE: ['']\nDATA:\n  DATA_PATH: /data/cifar10\n")
    assert load_config(path).DATA.ROOT == "/data/cifar10"


def test_new_style_files_stay_strict(tmp_path):
    path = tmp_path / "new.yaml"
    path.write_text("TRAIN:\n  LR: 0.1\n  LRR: 0.2\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'TRAIN\.LRR'.*did you mean TRAIN\.LR"):
        load_config(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a shipped config gives no notice
        load_config("digits_lenet")


def test_old_config_trains_one_epoch_on_digits_from_the_command_line(old_files, tmp_path, capsys):
    out = tmp_path / "run"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        status = main(["train", "--cfg", str(old_files / "digits_old.yaml"), "--batch-size", "128",
                       "--opts", "TRAIN.EPOCHS", "1", "PRINT_FREQ", "1", "--output", str(out)])
    assert status == 0, capsys.readouterr().err
    notices = [str(w.message) for w in caught if issubclass(w.category, OldConfigWarning)]
    assert len(notices) == 1 and "PRINT_FREQ (" in notices[0]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 1
    stored = summary["config"]
    assert stored["DATA"]["BATCH_SIZE"] == 128 and stored["TRAIN"]["OPTIMIZER"] == "sgd"
    assert stored["TRAIN"]["SCHEDULER"] == "step" and stored["DATA"]["AUGMENT"] == "jitter+flip+randaugment"
    assert "best val acc" in capsys.readouterr().out


def test_a_typo_in_a_new_style_file_is_not_taken_for_an_old_config(tmp_path):
    path = tmp_path / "new.yaml"
    path.write_text("TRAIN:\n  LRR: 0.2\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "old-style" not in str(info.value) and "DATA.DATA_PATH" not in str(info.value)
    assert not legacy.is_old_style(["TRAIN.LRR", "TRAIN.LR"], VALID_KEYS)
    assert legacy.is_old_style(["TRAIN.LR", "DATA.DATA_PATH"], VALID_KEYS)


def test_an_old_architecture_key_is_dropped_with_its_reason(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text("DATA:\n  DATA_PATH: /x\nMODEL:\n  RESNET:\n    DEPTH: 34\n")
    with pytest.warns(OldConfigWarning, match=r"MODEL\.RESNET\.DEPTH.*fixed architectures"):
        load_config(path)


@pytest.mark.skipif("MUTANT_UNDER_TEST" in __import__("os").environ,
                    reason="mutmut's trampolines add stack frames between load_config and the warning")
def test_the_old_config_notice_points_at_the_line_that_loads_the_config(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text("DATA:\n  DATA_PATH: /x\n  PIN_MEMORY: true\n")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        load_config(path)
    notices = [w for w in seen if issubclass(w.category, OldConfigWarning)]
    assert len(notices) == 1 and notices[0].filename == __file__   # the student's notebook cell or script
