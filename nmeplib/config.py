"""Configs: defaults in one place, YAML files that override them, and KEY=VALUE overrides.

A config is a nested :class:`Config` (a dict with attribute access) with the course's
upper-case dotted keys, e.g. ``config.TRAIN.LR``. YAML files may name parents with
``BASE: [file.yaml, ...]``; later files and overrides win. Every value is checked against
the type of its default and, where there is a fixed set, against the allowed choices, so a
typo fails early with a message naming the key instead of deep inside training.

Configs of the old course code (``DATA.DATA_PATH``, ``TRAIN.OPTIMIZER.NAME``, ``PRINT_FREQ``, ...)
load too: a file holding any old-only key is translated key by key (``legacy.py``), and old
key names are accepted as overrides; keys with no counterpart are named in one warning.
"""
from __future__ import annotations

import copy
import difflib
import functools
import os
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from . import legacy
from .errors import ConfigError

CONFIG_DIR = Path(__file__).parent / "configs"

# Every key here is read by the code; the comment says what it means.
DEFAULTS: dict[str, Any] = {
    "DATA": {
        "DATASET": "digits",        # cifar10 | medium_imagenet | digits
        "ROOT": "",                 # CIFAR-10 folder or HDF5 file; empty: ./data/<dataset>
        "IMG_SIZE": 32,             # images are resized to IMG_SIZE x IMG_SIZE
        "BATCH_SIZE": 128,          # per process (per GPU under torchrun)
        "NUM_WORKERS": 2,           # loader worker processes for HDF5 files (at most the usable cores)
        "AUGMENT": "none",          # scheme name or components joined by '+', see data/augment.py
        "CLASS_NAMES": "",          # optional class-names file for an HDF5 dataset
        "DOWNLOAD": True,           # fetch CIFAR-10 when DATA.ROOT lacks it
        "PRELOAD": False,           # HDF5: read whole splits into memory once
        "TRAIN_SUBSET": 0,          # train on this many training images (stratified, seeded); 0: all
    },
    "MODEL": {
        "NAME": "lenet",            # lenet | alexnet | resnet18
        "NUM_CLASSES": None,        # None: the dataset's number of classes
        "ACTIVATION": "default",    # default (the model's own) | relu | leaky_relu | gelu | silu | sigmoid
        "DROPOUT": None,            # None: the model's own (AlexNet 0.5, others 0.0)
    },
    "TRAIN": {
        "EPOCHS": 10,
        "WARMUP_EPOCHS": 0,         # linear warm-up before the schedule
        "WARMUP_LR": 0.0,           # the warm-up rises linearly from this rate
        "LR": 1e-3,
        "MIN_LR": 0.0,              # floor of the cosine schedule
        "WEIGHT_DECAY": 0.05,
        "OPTIMIZER": "adamw",       # adamw | adam | sgd | rmsprop
        "MOMENTUM": 0.9,            # sgd and rmsprop
        "SCHEDULER": "cosine",      # cosine | constant | step | plateau
        "DECAY_EPOCHS": 30,         # step: epochs between decays
        "DECAY_RATE": 0.1,          # step and plateau: factor applied to the LR
        "LABEL_SMOOTHING": 0.0,
        "COMPILE": False,           # torch.compile the model (CUDA)
    },
    "WANDB": {
        "MODE": "",                 # online | offline | disabled; empty: $WANDB_MODE, else online if logged in
        "PROJECT": "nmeplib",
        "ENTITY": "",
        "NAME": "",                 # run name; empty: the output folder's name
        "GROUP": "",                # sweeps put their runs in one group
    },
    "SEED": 0,
    "OUTPUT": "runs/default",
}



@functools.cache
def choices() -> dict[str, tuple]:
    """The allowed values of keys with a fixed set, read from the modules that implement them,
    so adding a model, optimizer or scheduler is one edit there."""
    from .data.build import DATASETS
    from .models.build import ACTIVATION_NAMES, MODEL_NAMES
    from .optim import OPTIMIZERS, SCHEDULERS
    from .tracking import MODES
    return {"DATA.DATASET": tuple(DATASETS), "MODEL.NAME": MODEL_NAMES, "MODEL.ACTIVATION": ACTIVATION_NAMES,
            "TRAIN.OPTIMIZER": tuple(OPTIMIZERS), "TRAIN.SCHEDULER": SCHEDULERS, "WANDB.MODE": ("", *MODES)}


# Keys whose default is None and the type they take when set.
OPTIONAL_TYPES: dict[str, type] = {"MODEL.NUM_CLASSES": int, "MODEL.DROPOUT": float}
POSITIVE = ("DATA.IMG_SIZE", "DATA.BATCH_SIZE", "TRAIN.EPOCHS", "TRAIN.DECAY_EPOCHS", "MODEL.NUM_CLASSES")
NON_NEGATIVE = ("DATA.NUM_WORKERS", "DATA.TRAIN_SUBSET", "TRAIN.WARMUP_EPOCHS", "TRAIN.WARMUP_LR", "TRAIN.LR",
                "TRAIN.MIN_LR", "TRAIN.WEIGHT_DECAY", "TRAIN.MOMENTUM", "TRAIN.LABEL_SMOOTHING", "TRAIN.DECAY_RATE")


class Config(dict):
    """A nested dict whose keys read as attributes: ``config.TRAIN.LR``."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"config has no key {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def get_path(self, key: str) -> Any:
        node: Any = self
        for part in key.split("."):
            node = node[part]
        return node

    def to_dict(self) -> dict:
        """Plain nested dicts: what checkpoints, W&B and JSON store."""
        return {k: v.to_dict() if isinstance(v, Config) else v for k, v in self.items()}

    def flat(self) -> dict[str, Any]:
        """``{"TRAIN.LR": 0.001, ...}``."""
        return dict(_flatten(self.to_dict()))

    def __deepcopy__(self, memo: dict) -> "Config":
        return _wrap(copy.deepcopy(self.to_dict(), memo))


def _wrap(tree: Mapping) -> Config:
    return Config({k: _wrap(v) if isinstance(v, Mapping) else v for k, v in tree.items()})


def _flatten(tree: Mapping, prefix: str = "") -> Iterable[tuple[str, Any]]:
    for key, value in tree.items():
        if isinstance(value, Mapping):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


VALID_KEYS = dict(_flatten(DEFAULTS))


def _unknown_key(key: str, where: str, old_style: bool = False) -> ConfigError:
    names = [*VALID_KEYS, *legacy.OLD_KEYS] if old_style else list(VALID_KEYS)
    close = difflib.get_close_matches(key, names, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; valid keys: {', '.join(VALID_KEYS)}"
    return ConfigError(f"unknown config key {key!r} in {where}{' (an old-style config)' if old_style else ''}{hint}")


def _coerce(key: str, value: Any) -> Any:
    """Return ``value`` as the type ``key`` takes, or raise ConfigError naming the key."""
    default = VALID_KEYS[key]
    kind = OPTIONAL_TYPES.get(key, type(default))
    if value is None and key in OPTIONAL_TYPES:
        return None
    if isinstance(value, str) and value.strip().lower() in ("none", "null", "~") and key in OPTIONAL_TYPES:
        return None
    try:
        if kind is bool:
            if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
                value = value.lower() in ("true", "1", "yes")
            elif type(value) is int and value in (0, 1):   # KEY=1 arrives as YAML's int
                value = bool(value)
            if not isinstance(value, bool):
                raise TypeError
        elif kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            value = int(value)
        elif kind is float:
            if isinstance(value, bool):
                raise TypeError
            value = float(value)
        elif kind is str:
            if isinstance(value, (dict, list)):
                raise TypeError
            value = "" if value is None else str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key} must be {kind.__name__}{' or None' if key in OPTIONAL_TYPES else ''}, "
                          f"got {value!r}") from None
    allowed = choices().get(key)
    if allowed is not None and value not in allowed:
        raise ConfigError(f"{key} must be one of {', '.join(repr(c) for c in allowed)}, got {value!r}")
    if value is not None and key in POSITIVE and value <= 0:
        raise ConfigError(f"{key} must be positive, got {value!r}")
    if value is not None and key in NON_NEGATIVE and value < 0:
        raise ConfigError(f"{key} must not be negative, got {value!r}")
    return value


def _set(config: Config, key: str, value: Any, where: str,
         translator: legacy.Translator | None = None, old_style: bool = False) -> None:
    """Set ``key``; with a ``translator``, an old course key is set under its new name (or left out)."""
    if key not in VALID_KEYS:
        if translator is None or not legacy.is_old_key(key):
            raise _unknown_key(key, where, old_style)
        for new_key, new_value in translator.translate(key, value):
            try:
                _set(config, new_key, new_value, where)
            except ConfigError as err:
                raise ConfigError(f"{key} (old name of {new_key}) in {where}: {err}") from None
        return
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
        node = node[part]
    node[leaf] = _coerce(key, value)


class _Refused(yaml.constructor.ConstructorError):
    """What :class:`_StrictLoader` refuses, reported as one line with the file and line."""


class _StrictLoader(yaml.SafeLoader):
    """``yaml.safe_load``'s loader, less the traps of a hand-written config: a key given twice with
    different values (YAML keeps the last one silently), anchors with aliases (a small file can
    expand without bound), keys that are lists or mappings, and tags (``!!python/...``, ``!mine``),
    which are refused by name instead of YAML's multi-line message."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent) or getattr(self.peek_event(), "anchor", None):
            mark = self.peek_event().start_mark
            raise _Refused(None, None, "anchors and aliases (& and *) are not "
                                       "allowed in a config; write the values out", mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (list, dict, set)):
                raise _Refused(None, None, f"a key must be a name, got {key!r}", key_node.start_mark)
            value = self.construct_object(value_node, deep=True)
            if key in seen and seen[key][0] != value:  # the old course's files repeat some keys, unchanged
                raise _Refused(None, None, _repeated(key, *seen[key], value), key_node.start_mark)
            seen[key] = (value, key_node.start_mark.line + 1)
        return super().construct_mapping(node, deep)

    def construct_undefined(self, node):
        tag = node.tag.replace("tag:yaml.org,2002:", "!!")
        raise _Refused(None, None, f"the tag {tag} is not allowed in a config; write plain values",
                       node.start_mark)


_StrictLoader.add_constructor(None, _StrictLoader.construct_undefined)  # every tag SafeLoader lacks


def _repeated(key: Any, first: Any, first_line: int, then: Any) -> str:
    """What a key given twice with different values is told: two sections are to be joined,
    two values shown so that one is kept."""
    if isinstance(first, dict) and isinstance(then, dict):
        return (f"key {key!r} is given twice, with different contents (first on line {first_line}); "
                f"put everything under one {key}")
    return (f"key {key!r} is given twice, with different values ({first!r} on line {first_line}, "
            f"then {then!r}); keep one")


def _yaml_problem(err: yaml.YAMLError, text: str) -> str:
    """One line for a YAML error: ``, line N: what`` for what the loader refuses, else
    `` is not valid YAML: line N, column C: what`` (YAML's own message spans several lines)."""
    if isinstance(err, _Refused):
        return f", line {err.problem_mark.line + 1}: {err.problem}"
    if isinstance(err, yaml.reader.ReaderError):   # a control character: binary data that decodes as UTF-8
        line = text[:err.position].count("\n") + 1
        return f" is not a text file (character #x{err.character:04x} on line {line}); give a YAML config"
    if isinstance(err, yaml.MarkedYAMLError) and err.problem_mark is not None:
        mark = err.problem_mark
        what = err.problem
        if err.context:   # "expected a single document..., but found another document" reads in that order
            what = f"{err.context}, {what}" if what.startswith("but ") else f"{what} ({err.context})"
        return f" is not valid YAML: line {mark.line + 1}, column {mark.column + 1}: {what}"
    return " is not valid YAML: " + " ".join(str(err).split())


def read_yaml_text(text: str, where: str) -> Any:
    """``text`` read as YAML by :class:`_StrictLoader` (no code, no aliases, no repeated keys);
    a fault is one :class:`ConfigError` line that starts with ``where`` (``config PATH``)."""
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as err:
        raise ConfigError(where + _yaml_problem(err, text)) from None


def _find_file(name_or_path: str | os.PathLike) -> Path:
    path = Path(name_or_path)
    candidates = [path, CONFIG_DIR / path, CONFIG_DIR / f"{path}.yaml"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    shipped = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
    raise ConfigError(f"config {str(name_or_path)!r} not found: give a YAML path or one of: {shipped}")


def _read_yaml(path: Path, config: Config, seen: tuple[Path, ...] = (),
               translator: legacy.Translator | None = None) -> None:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"config {path} inherits from itself through BASE")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"config {path} is not a text file (not UTF-8); give a YAML config") from None
    tree = read_yaml_text(text, f"config {path}") or {}
    if not isinstance(tree, dict):
        raise ConfigError(f"config {path} must be a mapping of keys, got {type(tree).__name__}")
    bases = tree.pop("BASE", None) or []
    for base in [bases] if isinstance(bases, str) else bases:
        if not base:  # the old course configs' default: BASE: ['']
            continue
        base_path = path.parent / base if (path.parent / base).is_file() else _find_file(base)
        _read_yaml(base_path, config, seen + (path,), translator)
    items = list(_flatten(tree))
    old_style = legacy.is_old_style((key for key, _ in items), VALID_KEYS)
    for key, value in items:
        _set(config, key, value, str(path), translator if old_style else None, old_style)


def parse_override(item: str) -> tuple[str, Any]:
    """``"TRAIN.LR=0.01"`` -> ``("TRAIN.LR", 0.01)``; the value is read as YAML."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like KEY=VALUE, e.g. TRAIN.LR=0.001")
    key, text = item.split("=", 1)
    return key.strip(), parse_value(text, f"override {item!r}")


def parse_value(text: str, where: str) -> Any:
    """An override's VALUE read as YAML (``2`` an int, ``none`` None, ``[a, b]`` a list); text
    that is not YAML stays a string. Aliases, repeated keys and tags are refused, naming ``where``."""
    if not text.strip():
        return ""
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except _Refused as err:
        raise ConfigError(f"{where}: {err.problem}") from None
    except yaml.YAMLError:
        return text


OVERRIDES_FORMS = 'KEY=VALUE items or a mapping like {"TRAIN.LR": 0.01}'


def overrides_from_text(text: str) -> dict[str, Any]:
    """One string of overrides, as papermill's ``-p overrides '...'`` passes them:
    ``'{"TRAIN.LR": 0.01}'``, ``'["TRAIN.LR=0.01"]'`` or ``'TRAIN.LR=0.01 DATA.AUGMENT=none'``.
    Anything else (a mapping missing its ``}``, a word without ``=``) is one ConfigError
    quoting ``text`` and naming the forms expected."""
    text = text.strip()
    if not text:
        return {}
    try:
        parsed = yaml.load(text, Loader=_StrictLoader)
    except _Refused as err:  # a repeated key, an alias, a tag: its own message says which
        raise ConfigError(f"overrides {text!r}{_yaml_problem(err, text)}") from None
    except yaml.YAMLError:
        parsed = None
    if isinstance(parsed, Mapping):
        return {str(key): value for key, value in parsed.items()}
    if isinstance(parsed, list) and all(isinstance(item, str) and "=" in item for item in parsed):
        return dict(parse_override(item) for item in parsed)
    items = text.split()
    if text[0] in "{[" or any("=" not in item for item in items):
        raise ConfigError(f"overrides {text!r}: expected {OVERRIDES_FORMS}")
    return dict(parse_override(item) for item in items)


def check(config: Config) -> None:
    """Checks that involve more than one key."""
    if config.TRAIN.WARMUP_EPOCHS > config.TRAIN.EPOCHS:
        raise ConfigError(f"TRAIN.WARMUP_EPOCHS ({config.TRAIN.WARMUP_EPOCHS}) must not exceed "
                          f"TRAIN.EPOCHS ({config.TRAIN.EPOCHS})")
    if config.TRAIN.MIN_LR > config.TRAIN.LR:
        raise ConfigError(f"TRAIN.MIN_LR ({config.TRAIN.MIN_LR}) must not exceed TRAIN.LR ({config.TRAIN.LR})")
    if config.MODEL.DROPOUT is not None and not 0 <= config.MODEL.DROPOUT < 1:
        raise ConfigError(f"MODEL.DROPOUT must be in [0, 1), got {config.MODEL.DROPOUT}")
    if config.TRAIN.LABEL_SMOOTHING >= 1:
        raise ConfigError(f"TRAIN.LABEL_SMOOTHING must be in [0, 1), got {config.TRAIN.LABEL_SMOOTHING}")
    from .data.augment import parse_augment  # late import: data imports config
    try:
        parse_augment(config.DATA.AUGMENT)
    except ValueError as err:
        raise ConfigError(f"DATA.AUGMENT: {err}") from None
    from .data.build import DATASETS
    known = DATASETS[config.DATA.DATASET]
    wanted = config.MODEL.NUM_CLASSES
    if known is not None and wanted is not None and wanted > known:
        warnings.warn(f"MODEL.NUM_CLASSES={wanted} but {config.DATA.DATASET} has {known} classes: "
                      f"{wanted - known} outputs never see a label; leave it unset (none) to take the dataset's",
                      UserWarning, stacklevel=4)  # at load_config's caller


def _apply(config: Config, overrides: Iterable[str] | Mapping[str, Any],
           translator: legacy.Translator | None = None) -> Config:
    """Set ``overrides`` (old course key names too), run :func:`check`, then name any old keys
    that were left out in one :class:`legacy.OldConfigWarning`."""
    translator = translator or legacy.Translator()
    items = overrides.items() if isinstance(overrides, Mapping) else map(parse_override, overrides)
    for key, value in items:
        _set(config, key, value, "overrides", translator)
    check(config)
    translator.warn()
    return config


def load_config(name_or_path: str | os.PathLike | None = None,
                overrides: Iterable[str] | Mapping[str, Any] = ()) -> Config:
    """Defaults, then the YAML file (and its BASE files), then ``overrides``.

    ``name_or_path`` is a path or the name of a shipped config (``lenet_base``); ``None``
    gives the defaults. ``overrides`` is ``["TRAIN.LR=0.01", ...]`` or ``{"TRAIN.LR": 0.01}``.
    A file of the old course code and old key names in ``overrides`` are translated
    (``nmeplib.legacy``); the keys left out are named in one ``OldConfigWarning``.
    """
    config = _wrap(copy.deepcopy(DEFAULTS))
    translator = legacy.Translator()
    if name_or_path:
        _read_yaml(_find_file(name_or_path), config, translator=translator)
    return _apply(config, overrides, translator)


def from_dict(tree: Mapping, overrides: Iterable[str] | Mapping[str, Any] = ()) -> Config:
    """Rebuild a config stored as plain data (a checkpoint's), then apply ``overrides``."""
    config = _wrap(copy.deepcopy(DEFAULTS))
    for key, value in _flatten(tree):
        _set(config, key, value, "stored config")
    return _apply(config, overrides)


def from_stored(tree: Mapping, overrides: Iterable[str] | Mapping[str, Any] = (), where: str = "stored config") -> Config:
    """:func:`from_dict` for a config that an earlier version of nmeplib stored (a checkpoint's, a
    summary's): a key this version no longer has is named in one warning and left out, so runs
    stored before a code update stay usable; keys added since take their defaults."""
    items = list(_flatten(tree))
    gone = [key for key, _ in items if key not in VALID_KEYS]
    if gone:
        warnings.warn(f"{where}: {', '.join(gone)} {'is' if len(gone) == 1 else 'are'} no longer a setting of "
                      f"nmeplib; left out", UserWarning, stacklevel=2)
    config = _wrap(copy.deepcopy(DEFAULTS))
    for key, value in items:
        if key in VALID_KEYS:
            _set(config, key, value, where)
    return _apply(config, overrides)
