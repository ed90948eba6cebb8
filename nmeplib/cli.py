"""``python -m nmeplib {train,predict,summary,make-hdf5,throughput}``.

Every expected failure (a bad config key, a missing or malformed file, a run folder in use, a
full disk, a diverged run) ends with one line ``error: ...`` naming what is wrong and exit
status 2. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from .config import ConfigError, load_config


def _train(args: argparse.Namespace) -> None:
    from . import checkpoint as ckpt
    from .config import from_dict
    from .engine import fit
    from .runtime import rank_and_world

    overrides = list(args.set)
    if args.output:
        overrides.append(f"OUTPUT={args.output}")
    if args.resume and not args.config:
        if not args.output:
            raise ConfigError("--resume needs --output, the folder of the run to continue")
        stored = ckpt.load_checkpoint(Path(args.output) / ckpt.LAST)["config"]
        config = from_dict(stored, overrides)
    else:
        config = load_config(args.config, overrides)
    history = fit(config, resume=args.resume, overwrite=args.overwrite)
    if history and rank_and_world()[0] == 0:
        best = ckpt.best_row(history)
        print(f"best val acc {best['val_acc']:.2f}% (epoch {best['epoch']}); run folder {config.OUTPUT}")


def _predict(args: argparse.Namespace) -> None:
    from .submission import predict, write_submission

    from .runtime import rank_and_world

    result = predict(args.checkpoint, args.set, split=args.split)
    if rank_and_world()[0] != 0:
        return
    path = write_submission(result["predictions"], args.out, result["num_images"], result["num_classes"])
    accuracy = f"; accuracy {result['acc']:.2f}% on the labelled images" if result["count"] else ""
    print(f"wrote {path}: {result['num_images']} rows{accuracy}")


def _summary(args: argparse.Namespace) -> None:
    from .models import build_model_from_config, format_summary, model_summary
    from .engine import check_img_size

    config = load_config(args.config, args.set)
    num_classes = config.MODEL.NUM_CLASSES or (10 if config.DATA.DATASET != "medium_imagenet" else 200)
    model = build_model_from_config(config, num_classes)
    size = config.DATA.IMG_SIZE
    check_img_size(model, config)
    print(f"{config.MODEL.NAME}, {num_classes} classes, input 3×{size}×{size}")
    print(format_summary(model_summary(model, (3, size, size))))


# Commands with their own argument parsers: everything after the command name goes to them.
PASSTHROUGH = {
    "make-hdf5": ("nmeplib.data.make_hdf5", "build a MediumImageNet-format HDF5 file from an image folder tree"),
    "throughput": ("nmeplib.throughput", "training images/s and peak memory vs batch size"),
    "release": ("nmeplib.release", "write the student repository: solutions stubbed, worksheet answers blanked"),
    "check": ("nmeplib.grading", "grade AlexNet and ResNet18: parameters, shapes, gradients, forward, training"),
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m nmeplib", description="Train, inspect and submit image classifiers.")
    sub = p.add_subparsers(dest="command", required=True)
    kv = dict(nargs="+", default=[], metavar="KEY=VALUE",
              help="config overrides, e.g. TRAIN.LR=0.01 DATA.BATCH_SIZE=64")

    t = sub.add_parser("train", help="train a model from a config")
    t.add_argument("--config", help="a shipped config name (lenet_base, ...) or a YAML path")
    t.add_argument("--set", action="extend", **kv)
    t.add_argument("--output", help="run folder (sets OUTPUT)")
    t.add_argument("--resume", action="store_true", help="continue the run in --output from checkpoint_last.pt")
    t.add_argument("--overwrite", action="store_true", help="replace the run that --output holds")
    t.set_defaults(run=_train)

    pr = sub.add_parser("predict", help="write a Kaggle submission.csv from a checkpoint")
    pr.add_argument("--checkpoint", required=True)
    pr.add_argument("--set", action="extend", **kv)
    pr.add_argument("--out", default="submission.csv")
    pr.add_argument("--split", default="test", choices=("train", "val", "test"))
    pr.set_defaults(run=_predict)

    s = sub.add_parser("summary", help="layers, output shapes and parameter counts of a config's model")
    s.add_argument("--config", required=True)
    s.add_argument("--set", action="extend", **kv)
    s.set_defaults(run=_summary)

    for name, (_, help_text) in PASSTHROUGH.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return p


def main(argv: list[str] | None = None) -> int:
    from .checkpoint import CheckpointError, OutputError
    from .data import DatasetError
    from .data.workers import WorkerError
    from .engine import TrainingDiverged

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in PASSTHROUGH:
        module = importlib.import_module(PASSTHROUGH[argv[0]][0])
        run = lambda: module.main(argv[1:])  # noqa: E731
    else:
        args = parser().parse_args(argv)
        run = lambda: args.run(args)  # noqa: E731
    from .runtime import init_distributed, shutdown_distributed

    try:
        init_distributed()
        status = run()
    except (ConfigError, DatasetError, CheckpointError, OutputError, TrainingDiverged, WorkerError,
            FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; resume with --resume", file=sys.stderr)
        return 130
    finally:
        shutdown_distributed()
    return status or 0
