import pytest
import yaml

from nmeplib.config import CONFIG_DIR, VALID_KEYS, Config, ConfigError, from_dict, load_config


def test_defaults_and_shipped_configs_load():
    assert load_config().TRAIN.OPTIMIZER == "adamw"
    for path in CONFIG_DIR.glob("*.yaml"):
        config = load_config(path.stem)
        assert config.MODEL.NAME in ("lenet", "alexnet", "resnet18")
    assert load_config("alexnet_base").DATA.IMG_SIZE == 70


def test_base_inheritance_and_override_order(tmp_path):
    (tmp_path / "parent.yaml").write_text(yaml.safe_dump({"TRAIN": {"LR": 0.5, "EPOCHS": 7}, "SEED": 3}))
    (tmp_path / "child.yaml").write_text(yaml.safe_dump({"BASE": ["parent.yaml"], "TRAIN": {"LR": 0.25}}))
    config = load_config(tmp_path / "child.yaml", ["SEED=9", "DATA.AUGMENT=crop+flip"])
    assert (config.TRAIN.LR, config.TRAIN.EPOCHS, config.SEED) == (0.25, 7, 9)
    assert config.DATA.AUGMENT == "crop+flip"
    shipped = load_config("resnet18_medium_imagenet")
    assert shipped.MODEL.NAME == "resnet18" and shipped.DATA.DATASET == "medium_imagenet"


def test_override_values_are_typed():
    config = load_config(None, ["TRAIN.LR=1e-3", "DATA.BATCH_SIZE=64", "MODEL.NUM_CLASSES=none",
                                "TRAIN.COMPILE=true", "MODEL.DROPOUT=0.2"])
    assert config.TRAIN.LR == 1e-3 and isinstance(config.TRAIN.LR, float)
    assert config.DATA.BATCH_SIZE == 64 and config.MODEL.NUM_CLASSES is None
    assert config.TRAIN.COMPILE is True and config.MODEL.DROPOUT == 0.2
    assert load_config(None, {"TRAIN.LR": 3}).TRAIN.LR == 3.0


def test_unknown_key_names_closest():
    with pytest.raises(ConfigError, match=r"TRAIN\.LRR.*TRAIN\.LR"):
        load_config(None, ["TRAIN.LRR=0.1"])


def test_unknown_key_in_file_names_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("DATA:\n  BATCHSIZE: 4\n")
    with pytest.raises(ConfigError, match=r"DATA\.BATCHSIZE.*bad\.yaml.*DATA\.BATCH_SIZE"):
        load_config(path)


@pytest.mark.parametrize("override, message", [
    ("DATA.BATCH_SIZE=abc", r"DATA\.BATCH_SIZE must be int"),
    ("DATA.BATCH_SIZE=0", r"DATA\.BATCH_SIZE must be positive"),
    ("TRAIN.LR=-1", r"TRAIN\.LR must not be negative"),
    ("TRAIN.OPTIMIZER=adagrad", r"TRAIN\.OPTIMIZER must be one of 'adamw', 'adam', 'sgd', 'rmsprop'"),
    ("TRAIN.SCHEDULER=linear", r"TRAIN\.SCHEDULER must be one of"),
    ("DATA.DATASET=mnist", r"DATA\.DATASET must be one of 'cifar10', 'medium_imagenet', 'digits'"),
    ("MODEL.DROPOUT=1.5", r"MODEL\.DROPOUT must be in \[0, 1\)"),
    ("MODEL.DROPOUT=1.0", r"MODEL\.DROPOUT must be in \[0, 1\), got 1\.0"),  # checked once, here
    ("DATA.AUGMENT=crop+sparkle", r"DATA\.AUGMENT: unknown augmentation sparkle"),
    ("TRAIN.WARMUP_EPOCHS=20", r"TRAIN\.WARMUP_EPOCHS \(20\) must not exceed TRAIN\.EPOCHS"),
    ("TRAIN.COMPILE=maybe", r"TRAIN\.COMPILE must be bool"),
    ("TRAIN.LR", r"must look like KEY=VALUE"),
])
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_missing_config_lists_shipped():
    with pytest.raises(ConfigError, match=r"not found.*lenet_base"):
        load_config("no_such_config")


def test_bad_yaml_and_base_cycle(tmp_path):
    (tmp_path / "broken.yaml").write_text("DATA: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "broken.yaml")
    (tmp_path / "a.yaml").write_text("BASE: b.yaml\n")
    (tmp_path / "b.yaml").write_text("BASE: a.yaml\n")
    with pytest.raises(ConfigError, match="inherits from itself"):
        load_config(tmp_path / "a.yaml")


def test_round_trip_through_plain_data():
    config = load_config("alexnet_base", ["TRAIN.LR=0.01"])
    plain = config.to_dict()
    assert type(plain["TRAIN"]) is dict
    again = from_dict(plain, ["SEED=5"])
    assert again.TRAIN.LR == 0.01 and again.SEED == 5 and again.DATA.IMG_SIZE == 70
    assert set(config.flat()) == set(VALID_KEYS)


class RecordingConfig(Config):
    """A config that notes the full dotted name of every value read from it (``config.TRAIN.LR``,
    ``config["WANDB"]["NAME"]``, ``t = config.TRAIN; t.LR``, ``.get``); iterating over it
    (``to_dict``, ``flat``) reads nothing."""

    def __init__(self, tree, log: set, prefix: str = ""):
        super().__init__()
        object.__setattr__(self, "_log", log)
        object.__setattr__(self, "_prefix", prefix)
        for key, value in tree.items():
            dict.__setitem__(self, key, RecordingConfig(value, log, f"{prefix}{key}.") if isinstance(value, dict)
                             else value)

    def __getitem__(self, key):
        value = dict.__getitem__(self, key)
        if not isinstance(value, RecordingConfig):
            self._log.add(self._prefix + key)
        return value

    def get(self, key, default=None):
        return self[key] if key in self else default


class Anything:
    """Stands in for the wandb module and its run: every attribute and call works."""

    def __init__(self, path):
        self._path = path

    def __getattr__(self, name):
        return Anything(self._path)

    def __call__(self, *args, **kwargs):
        return Anything(self._path)

    def __fspath__(self):
        return str(self._path)

    __str__ = __fspath__


def test_recording_config_names_each_read():
    log = set()
    config = RecordingConfig(load_config().to_dict(), log)
    train = config.TRAIN
    assert (train.LR, config["WANDB"]["NAME"], config.get("SEED"), config.DATA.get("ROOT")) == (1e-3, "", 0, "")
    config.to_dict(), config.flat(), config.get_path("MODEL.NAME")
    assert log == {"TRAIN.LR", "WANDB.NAME", "SEED", "DATA.ROOT", "MODEL.NAME"}


def test_every_key_is_read_by_the_code(tmp_path, monkeypatch):
    """No dead keys: training, W&B start-up and each dataset read every key by its full name."""
    import sys

    from helpers import write_cifar

    from nmeplib.data import build_dataset, build_loader
    from nmeplib.engine import fit
    from nmeplib.workbook.settings import make_demo_hdf5

    monkeypatch.setitem(sys.modules, "wandb", Anything(tmp_path / "wandb" / "run" / "files"))
    log = set()

    def recording(name, overrides):
        return RecordingConfig(load_config(name, overrides).to_dict(), log)

    # training with W&B on (offline, a stand-in module), SGD (momentum) and label smoothing
    fit(recording("digits_lenet", [f"OUTPUT={tmp_path / 'run'}", "TRAIN.EPOCHS=1", "DATA.BATCH_SIZE=64",
                                   "WANDB.MODE=offline", "TRAIN.OPTIMIZER=sgd", "TRAIN.LABEL_SMOOTHING=0.1"]))
    # CIFAR-10 from a folder (DATA.DOWNLOAD) and an HDF5 file (workers, class names, preloading)
    write_cifar(tmp_path / "cifar", per_batch=4)
    build_dataset(recording("lenet_base", [f"DATA.ROOT={tmp_path / 'cifar'}", "DATA.DOWNLOAD=false"]), "val")
    hdf5 = make_demo_hdf5(tmp_path / "demo.hdf5", img_size=8)
    for preload in ("false", "true"):
        build_loader(recording("resnet18_medium_imagenet", [f"DATA.ROOT={hdf5}", "DATA.IMG_SIZE=8",
                                                            "DATA.NUM_WORKERS=0", f"DATA.PRELOAD={preload}"]),
                     "val", device="cpu")
    never = sorted(set(VALID_KEYS) - log)
    assert not never, f"config keys never read: {', '.join(never)}"


def test_num_classes_above_the_datasets_warns():
    with pytest.warns(UserWarning, match=r"MODEL\.NUM_CLASSES=200 but cifar10 has 10 classes: 190 outputs never"):
        load_config("lenet_base", ["MODEL.NUM_CLASSES=200"])
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_config("lenet_base", ["MODEL.NUM_CLASSES=10"])
        load_config("resnet18_medium_imagenet", ["MODEL.NUM_CLASSES=200"])  # the file says; not checked here


def test_old_key_names_work_as_overrides():
    from nmeplib.legacy import OldConfigWarning

    with pytest.warns(OldConfigWarning, match=r"left out: PRINT_FREQ \("):
        config = load_config("digits_lenet", ["DATA.DATA_PATH=/data/x", "TRAIN.OPTIMIZER.NAME=SGD", "PRINT_FREQ=10"])
    assert config.DATA.ROOT == "/data/x" and config.TRAIN.OPTIMIZER == "sgd"
    with pytest.raises(ConfigError, match=r"unknown config key 'TRAIN\.OPTIMIZER\.NAMES'"):
        load_config("digits_lenet", ["TRAIN.OPTIMIZER.NAMES=sgd"])


@pytest.mark.parametrize("text, value", [("true", True), ("True", True), ("1", True), ("yes", True), ("YES", True),
                                         ("false", False), ("FALSE", False), ("0", False), ("no", False)])
def test_every_boolean_spelling_an_override_may_use(text, value):
    assert load_config("digits_lenet", [f"TRAIN.COMPILE={text}"]).TRAIN.COMPILE is value


@pytest.mark.parametrize("text", ["none", "None", "null", "NULL", "~", " none "])
def test_every_none_spelling_resets_an_optional_key(text):
    assert load_config("digits_lenet", ["MODEL.DROPOUT=0.3", f"MODEL.DROPOUT={text}"]).MODEL.DROPOUT is None


@pytest.mark.parametrize("text", ["maybe", "2", "0.5"])
def test_other_boolean_spellings_are_refused_by_name(text):
    with pytest.raises(ConfigError, match=rf"^TRAIN\.COMPILE must be bool, got '?{text}'?$"):
        load_config("digits_lenet", [f"TRAIN.COMPILE={text}"])


def test_unknown_key_messages_in_full(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(None, ["TRAIN.LRR=0.1"])
    assert str(err.value).startswith("unknown config key 'TRAIN.LRR' in overrides; did you mean TRAIN.LR")
    assert str(err.value).endswith("?") and "valid keys" not in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_config(None, ["QQQQQQQQQQ=1"])
    assert str(err.value) == f"unknown config key 'QQQQQQQQQQ' in overrides; valid keys: {', '.join(VALID_KEYS)}"
    old = tmp_path / "old.yaml"
    old.write_text("DATA:\n  DATA_PATH: /x\n  BATCHSIZE: 4\n")
    with pytest.raises(ConfigError, match=r"^unknown config key 'DATA\.BATCHSIZE' in .*old\.yaml "
                                          r"\(an old-style config\); did you mean DATA\.BATCH_SIZE"):
        load_config(old)


@pytest.mark.parametrize("overrides, message", [
    (["TRAIN.LR=0.01", "TRAIN.MIN_LR=0.1"], r"^TRAIN\.MIN_LR \(0\.1\) must not exceed TRAIN\.LR \(0\.01\)$"),
    (["TRAIN.WARMUP_EPOCHS=11"], r"^TRAIN\.WARMUP_EPOCHS \(11\) must not exceed TRAIN\.EPOCHS \(10\)$"),
    (["MODEL.DROPOUT=-0.1"], r"^MODEL\.DROPOUT must be in \[0, 1\), got -0\.1$"),
    (["TRAIN.LABEL_SMOOTHING=1"], r"^TRAIN\.LABEL_SMOOTHING must be in \[0, 1\), got 1\.0$"),
    (["DATA.AUGMENT=sparkle"], r"^DATA\.AUGMENT: unknown augmentation sparkle"),
    (["MODEL.NUM_CLASSES=0"], r"^MODEL\.NUM_CLASSES must be positive, got 0$"),
    (["DATA.NUM_WORKERS=-1"], r"^DATA\.NUM_WORKERS must not be negative, got -1$"),
    (["MODEL.NUM_CLASSES=abc"], r"^MODEL\.NUM_CLASSES must be int or None, got 'abc'$"),
    (["DATA.BATCH_SIZE=2.5"], r"^DATA\.BATCH_SIZE must be int, got 2\.5$"),
    (["DATA.BATCH_SIZE=true"], r"^DATA\.BATCH_SIZE must be int, got True$"),
    (["TRAIN.LR=true"], r"^TRAIN\.LR must be float, got True$"),
    (["DATA.ROOT=[a, b]"], r"^DATA\.ROOT must be str, got \['a', 'b'\]$"),
    (["DATA.ROOT={a: 1}"], r"^DATA\.ROOT must be str, got \{'a': 1\}$"),
    (["TRAIN.COMPILE=2"], r"^TRAIN\.COMPILE must be bool, got 2$"),
    (["MODEL.NAME=vgg"], r"^MODEL\.NAME must be one of 'lenet', 'alexnet', 'resnet18', got 'vgg'$"),
])
def test_refusals_name_the_key_and_value_exactly(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_values_at_the_limits_are_accepted():
    config = load_config(None, ["TRAIN.WARMUP_EPOCHS=10", "TRAIN.MIN_LR=0.001", "MODEL.DROPOUT=0",
                                "TRAIN.LABEL_SMOOTHING=0.99", "DATA.NUM_WORKERS=0", "TRAIN.LR=0",
                                "TRAIN.MIN_LR=0", "DATA.BATCH_SIZE=1", "DATA.BATCH_SIZE=2.0", "SEED=-3"])
    assert (config.TRAIN.WARMUP_EPOCHS, config.MODEL.DROPOUT, config.TRAIN.LABEL_SMOOTHING) == (10, 0.0, 0.99)
    assert (config.DATA.NUM_WORKERS, config.TRAIN.LR, config.SEED) == (0, 0.0, -3)
    assert config.DATA.BATCH_SIZE == 2 and type(config.DATA.BATCH_SIZE) is int
    assert load_config(None, ["TRAIN.LR=0.01", "TRAIN.MIN_LR=0.01"]).TRAIN.MIN_LR == 0.01
    assert load_config(None, {"MODEL.NUM_CLASSES": None, "MODEL.DROPOUT": None}).MODEL.NUM_CLASSES is None


@pytest.mark.parametrize("item, key, value", [
    ("TRAIN.LR=0.5", "TRAIN.LR", 0.5),
    ("  TRAIN.LR = 0.5", "TRAIN.LR", 0.5),
    ("DATA.ROOT=", "DATA.ROOT", ""),
    ("DATA.ROOT=   ", "DATA.ROOT", ""),
    ("DATA.ROOT=a=b", "DATA.ROOT", "a=b"),
    ("DATA.ROOT=[unclosed", "DATA.ROOT", "[unclosed"),  # not YAML: the text as it is
    ("DATA.AUGMENT=crop+flip", "DATA.AUGMENT", "crop+flip"),
    ("MODEL.NUM_CLASSES=7", "MODEL.NUM_CLASSES", 7),
])
def test_parse_override(item, key, value):
    from nmeplib.config import parse_override

    assert parse_override(item) == (key, value)
    assert load_config(None, [item]).get_path(key) == value


def test_override_without_equals_shows_the_form():
    with pytest.raises(ConfigError, match=r"^override 'TRAIN\.LR' must look like KEY=VALUE, e\.g\. TRAIN\.LR=0\.001$"):
        load_config(None, ["TRAIN.LR"])


def test_yaml_files_bases_and_their_errors(tmp_path):
    (tmp_path / "empty.yaml").write_text("")
    assert load_config(tmp_path / "empty.yaml") == load_config()
    (tmp_path / "one.yaml").write_text("BASE: lenet_base\nSEED: 4\n")   # a shipped name, as a string
    (tmp_path / "blank.yaml").write_text("BASE: ['']\nSEED: 5\n")        # the old configs' empty BASE
    assert load_config(tmp_path / "one.yaml") == load_config("lenet_base", ["SEED=4"])
    assert load_config(tmp_path / "blank.yaml") == load_config(None, ["SEED=5"])
    (tmp_path / "lenet_base.yaml").write_text("SEED: 6\n")   # beside the file wins over the shipped name
    (tmp_path / "local.yaml").write_text("BASE: [lenet_base.yaml]\n")
    assert load_config(tmp_path / "local.yaml") == load_config(None, ["SEED=6"])
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match=r"^config .*list\.yaml must be a mapping of keys, got list$"):
        load_config(tmp_path / "list.yaml")
    (tmp_path / "self.yaml").write_text("BASE: self.yaml\n")
    with pytest.raises(ConfigError, match=r"^config .*self\.yaml inherits from itself through BASE$"):
        load_config(tmp_path / "self.yaml")
    (tmp_path / "broken.yaml").write_text("DATA: [1, 2\n")
    with pytest.raises(ConfigError, match=r"^config .*broken\.yaml is not valid YAML: "):
        load_config(tmp_path / "broken.yaml")


def test_config_files_are_found_by_path_or_name(tmp_path, monkeypatch):
    shipped = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    assert load_config("lenet_base") == load_config("lenet_base.yaml") == load_config(CONFIG_DIR / "lenet_base.yaml")
    with pytest.raises(ConfigError) as err:
        load_config("no_such_config")
    assert str(err.value) == f"config 'no_such_config' not found: give a YAML path or one of: {', '.join(shipped)}"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.yaml").write_text("SEED: 8\n")
    assert load_config("mine.yaml").SEED == 8


def test_config_attribute_access_and_copies():
    import copy

    config = load_config()
    with pytest.raises(AttributeError, match=r"^config has no key 'NOPE'$"):
        config.NOPE
    config.SEED = 3
    assert config["SEED"] == 3 and config.get_path("TRAIN.LR") == config.TRAIN.LR
    twin = copy.deepcopy(config)
    twin.TRAIN.LR = 0.5
    assert config.TRAIN.LR == 1e-3 and isinstance(twin.TRAIN, Config)
    assert config.flat()["TRAIN.LR"] == 1e-3 and len(config.flat()) == len(VALID_KEYS)


@pytest.mark.skipif("MUTANT_UNDER_TEST" in __import__("os").environ,
                    reason="mutmut's trampolines add stack frames between load_config and the warning")
def test_num_classes_warning_points_at_the_caller():
    with pytest.warns(UserWarning, match=r"NUM_CLASSES=12 but cifar10 has 10 classes: 2 outputs never see") as rec:
        load_config("lenet_base", ["MODEL.NUM_CLASSES=12"])
    assert rec[0].filename == __file__


def test_a_misspelt_override_gets_three_current_names_at_most():
    # close matches at ratio >= 0.5, at most three, and never an old course key (DATA.DATA_PATH)
    with pytest.raises(ConfigError, match=r"^unknown config key 'DATA\.DATA_PAHT' in overrides; "
                                          r"did you mean DATA\.DATASET, DATA\.TRAIN_SUBSET, DATA\.BATCH_SIZE\?$"):
        load_config(None, ["DATA.DATA_PAHT=/x"])
    with pytest.raises(ConfigError, match=r"^unknown config key 'TRAIN\.LRR' in stored config; did you mean"):
        from_dict({"TRAIN": {"LRR": 0.1}})


def test_an_empty_string_key_takes_none_as_empty(tmp_path):
    assert load_config(None, ["DATA.ROOT=x", "DATA.ROOT=~"]).DATA.ROOT == ""
    (tmp_path / "c.yaml").write_text("DATA:\n  ROOT:\n  CLASS_NAMES: null\n")
    config = load_config(tmp_path / "c.yaml")
    assert config.DATA.ROOT == config.DATA.CLASS_NAMES == ""


def test_an_empty_base_is_skipped_not_the_end_of_the_list(tmp_path):
    (tmp_path / "c.yaml").write_text("BASE: ['', lenet_base]\n")
    assert load_config(tmp_path / "c.yaml") == load_config("lenet_base")


@pytest.mark.parametrize("text, value", [("true", True), ("True", True), ("TRUE", True), ("1", True), ("yes", True),
                                         ("Yes", True), ("false", False), ("False", False), ("0", False),
                                         ("no", False), ("NO", False)])
def test_boolean_spellings_given_as_text(text, value):
    """A mapping of overrides (a notebook's ``overrides``, papermill's ``-p``) passes text as it is,
    where ``KEY=VALUE`` overrides arrive already read by YAML."""
    assert load_config("digits_lenet", {"TRAIN.COMPILE": text}).TRAIN.COMPILE is value


@pytest.mark.parametrize("text", ["none", "None", "null", "NULL", "~", " none "])
def test_none_spellings_given_as_text(text):
    assert load_config("digits_lenet", {"MODEL.DROPOUT": 0.3, "MODEL.NUM_CLASSES": 7}).MODEL.DROPOUT == 0.3
    config = load_config("digits_lenet", {"MODEL.DROPOUT": text, "MODEL.NUM_CLASSES": text})
    assert config.MODEL.DROPOUT is None and config.MODEL.NUM_CLASSES is None


@pytest.mark.parametrize("text, message", [
    ("TRAIN:\n  EPOCHS: 2\n  EPOCHS: 3\n",
     r", line 3: key 'EPOCHS' is given twice, with different values \(2 on line 2, then 3\); keep one$"),
    ("TRAIN:\n  EPOCHS: 2\nSEED: 1\nTRAIN:\n  LR: 0.1\n",
     r", line 4: key 'TRAIN' is given twice, with different contents \(first on line 1\); put everything under "
     r"one TRAIN$"),
    ("a: &a [1, 2]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n",
     r", line 1: anchors and aliases \(& and \*\) are not allowed in a config; write the values out$"),
])
def test_duplicate_keys_and_aliases_are_refused_with_file_and_line(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=rf"^config {path}{message}"):
        load_config(path)


def test_every_shipped_config_still_loads():
    from nmeplib.config import CONFIG_DIR
    for path in sorted(CONFIG_DIR.glob("*.yaml")):
        load_config(path)


def test_a_binary_config_is_one_error_line_from_the_cli(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "photo.yaml"
    path.write_bytes(bytes(range(256)) * 4)
    done = subprocess.run([sys.executable, "-m", "nmeplib", "train", "--config", str(path), "--output",
                           str(tmp_path / "run")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr == f"error: config {path} is not a text file (not UTF-8); give a YAML config\n"


BAD_YAML = [  # (file text, what the one error line says after "config PATH")
    ("TRAIN: [\n", r" is not valid YAML: line 2, column 1: expected the node content, but found '<stream end>'"),
    ("SEED: 1\n---\nSEED: 2\n",
     r" is not valid YAML: line 2, column 1: expected a single document in the stream, but found another document$"),
    ("TRAIN: !!python/object/apply:os.system ['touch MARKER']\n",
     r", line 1: the tag !!python/object/apply:os.system is not allowed in a config; write plain values"),
    ("SEED: !mine 3\n", r", line 1: the tag !mine is not allowed in a config"),
    ("TRAIN:\n  EPOCHS: 2\n\x00\x01\n", r" is not a text file \(character #x0000 on line 3\); give a YAML config"),
    ("[1, 2]: 3\n", r", line 1: a key must be a name, got \[1, 2\]"),
    ("TRAIN:\n  ? {a: 1}\n  : 2\n", r", line 2: a key must be a name, got \{'a': 1\}"),
]


@pytest.mark.parametrize("text, message", BAD_YAML)
def test_bad_yaml_is_one_line_naming_the_file(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=rf"^config {path}{message}") as caught:
        load_config(path)
    assert "\n" not in str(caught.value)


def test_a_base_file_is_read_as_strictly_and_named(tmp_path):
    (tmp_path / "parent.yaml").write_text("SEED: &s 3\nTRAIN:\n  EPOCHS: *s\n")
    (tmp_path / "child.yaml").write_text("BASE: [parent.yaml]\nSEED: 4\n")
    with pytest.raises(ConfigError, match=rf"^config {tmp_path / 'parent.yaml'}, line 1: anchors and aliases"):
        load_config(tmp_path / "child.yaml")


def test_a_key_repeated_with_the_same_value_is_accepted(tmp_path):
    """The old course's lenet_base.yaml says ``PRINT_FREQ: 99999`` twice: harmless, so kept."""
    path = tmp_path / "same.yaml"
    path.write_text("TRAIN:\n  EPOCHS: 2\n  EPOCHS: 2\n")
    assert load_config(path).TRAIN.EPOCHS == 2


@pytest.mark.timeout(60)
def test_a_python_tag_runs_nothing_and_is_one_error_line_from_the_cli(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "evil.yaml"
    path.write_text(f"TRAIN: !!python/object/apply:os.system ['touch {tmp_path / 'MARKER'}']\n")
    done = subprocess.run([sys.executable, "-m", "nmeplib", "train", "--config", str(path), "--output",
                           str(tmp_path / "run")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr == (f"error: config {path}, line 1: the tag !!python/object/apply:os.system is not "
                           f"allowed in a config; write plain values\n")
    assert not (tmp_path / "MARKER").exists() and not (tmp_path / "run").exists()


def test_an_alias_bomb_in_an_override_is_refused():
    bomb = "DATA.AUGMENT=[&a [x, x, x, x], &b [*a, *a, *a, *a], [*b, *b, *b, *b, *b]]"
    with pytest.raises(ConfigError, match=r"^override 'DATA\.AUGMENT=\[&a .*: anchors and aliases \(& and \*\) "
                                          r"are not allowed"):
        load_config(None, [bomb])


@pytest.mark.parametrize("text", ['{"TRAIN.LR": 0.01', '{"TRAIN.LR": 0.01}}', '["TRAIN.LR=0.01"', "42",
                                  "TRAIN.LR=0.01 DATA.AUGMENT"])
def test_malformed_overrides_text_says_what_is_expected(text):
    from nmeplib.workbook.settings import as_overrides

    expected = (f"overrides {text!r}: expected KEY=VALUE items or a mapping like "
                '{"TRAIN.LR": 0.01}')
    with pytest.raises(ConfigError) as caught:
        as_overrides(text)
    assert str(caught.value) == expected


def test_overrides_text_in_each_accepted_form():
    from nmeplib.workbook.settings import as_overrides

    for text in ['{"TRAIN.LR": 0.01}', '["TRAIN.LR=0.01"]', "TRAIN.LR=0.01", "TRAIN.LR: 0.01", "  "]:
        assert as_overrides(text) == ({} if not text.strip() else {"TRAIN.LR": 0.01})
    with pytest.raises(ConfigError, match=r"^overrides '\{TRAIN\.LR: 1, TRAIN\.LR: 2\}', line 1: key 'TRAIN\.LR' "
                                          r"is given twice"):
        as_overrides("{TRAIN.LR: 1, TRAIN.LR: 2}")


def test_a_word_for_a_number_names_key_value_and_type(capsys):
    from nmeplib.cli import main
    from nmeplib.workbook.settings import notebook_config

    assert main(["train", "--config", "digits_lenet", "--set", "TRAIN.EPOCHS=abc"]) == 2
    assert capsys.readouterr().err == "error: TRAIN.EPOCHS must be int, got 'abc'\n"
    assert main(["train", "--cfg", "digits_lenet", "--opts", "TRAIN.LR", "fast"]) == 2
    assert capsys.readouterr().err == "error: TRAIN.LR must be float, got 'fast'\n"
    with pytest.raises(ConfigError, match=r"^TRAIN\.EPOCHS must be int, got 'abc'$"):
        notebook_config("digits_lenet", epochs="abc")


@pytest.mark.parametrize("item", ["epochs=abc", "05_sweeps.lr=fast", "epochs=[1", "epochs=[&a 1, *a]"])
def test_reproduce_param_of_the_wrong_type_is_one_line_before_any_notebook_runs(tmp_path, capsys, item):
    from nmeplib.cli import main

    assert main(["reproduce", str(tmp_path / "out"), "--param", item]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --param ") and err.count("\n") == 1
    name, value = item.rpartition(".")[2].split("=")
    assert name in err and (value.strip("[") in err or "aliases" in err)
    assert not (tmp_path / "out").exists()


def test_two_train_sections_are_one_error_line_from_the_cli(tmp_path, capsys):
    from nmeplib.cli import main

    path = tmp_path / "twice.yaml"
    path.write_text("BASE: [digits_lenet]\nTRAIN:\n  EPOCHS: 2\nTRAIN:\n  LR: 0.1\n")
    assert main(["train", "--config", str(path), "--output", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err == (f"error: config {path}, line 4: key 'TRAIN' is given twice, with different "
                                       f"contents (first on line 2); put everything under one TRAIN\n")
    assert not (tmp_path / "run").exists()
