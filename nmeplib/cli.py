"""``python -m nmeplib COMMAND``: the package's command line.

Commands: ``train`` (a model from a config), ``predict`` (a Kaggle submission.csv from a
checkpoint), ``summary`` (a config's model, layer by layer), ``make-hdf5`` (an image folder tree
as a MediumImageNet-format HDF5 file), ``throughput`` (training images/s and peak memory per
batch size), ``check`` (grade the student's AlexNet and ResNet18; ``check worksheet``: what the
worksheet still lacks) and ``submit`` (check, then pack the hand-in); for course staff,
``release`` (the student repository), ``reproduce`` (every worksheet experiment through its
notebook, into ``results/``), ``worksheet`` (worksheet.md's measured tables and figures from
``results/``), ``grade`` (a folder of submissions) and ``score`` (a submission against the hidden
test labels). All but the first three have their own argument parsers (``PASSTHROUGH``).

Every expected failure (a bad config key, a missing or malformed file, a run folder in use, a
full disk, a diverged run) ends with one line ``error: ...`` naming what is wrong and exit
status 2. Anything else is a bug and keeps its traceback.

``train`` also takes the old course code's flags (``main.py``): ``--cfg`` (``--config``),
``--opts KEY VALUE ...`` (``--set KEY=VALUE ...``), ``--batch-size``, ``--data-path``,
``--resume PATH`` (continue the run in PATH's folder), ``--eval`` (validate a checkpoint) and
``--throughput`` (the ``throughput`` command for the config's model).
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from .config import load_config
from .errors import ConfigError, NmeplibError


def _resume_target(path: str, output: str | None) -> tuple[Path, Path | None]:
    """``--resume PATH`` (the old course code's form): the run folder to continue and the
    checkpoint file named, if PATH is a file. A file must be an nmeplib checkpoint."""
    from . import checkpoint as ckpt

    given = Path(path)
    if given.is_dir():
        folder, checkpoint = given, None
    elif given.is_file():
        folder, checkpoint = given.parent, given
        ckpt.load_checkpoint(checkpoint)  # CheckpointError for the old code's .pth files
    else:
        raise FileNotFoundError(f"--resume {path}: no such checkpoint or run folder")
    if output and Path(output).resolve() != folder.resolve():
        raise ConfigError(f"--resume {path} continues the run in {folder}, but --output says {output}; "
                          f"give one of them")
    return folder, checkpoint


def _continue_from(checkpoint: Path, folder: Path) -> None:
    """``--resume FILE`` for training: a run continues from its folder's ``checkpoint_last.pt``, so
    FILE must be that file or a copy of it (the same epoch and history). A file of an earlier epoch
    (``checkpoint_best.pt``, say) is refused, since continuing from it would drop the later epochs,
    and so is any other, with what to do; never a silent start from scratch."""
    from . import checkpoint as ckpt

    last = folder / ckpt.LAST
    if checkpoint.name == ckpt.LAST:
        return
    if not last.is_file():
        raise ckpt.CheckpointError(
            f"--resume {checkpoint}: a run continues from its folder's {ckpt.LAST}, and {folder} has none; to "
            f"continue from this file, copy it to NEW/{ckpt.LAST} and give --resume NEW")
    named, current = ckpt.load_checkpoint(checkpoint), ckpt.load_checkpoint(last)
    epoch, done = named["epoch"], current["epoch"]
    if epoch == done and named["history"] == current["history"]:
        print(f"resuming the run in {folder} from its {ckpt.LAST}, which is at the same epoch {done} as {checkpoint}")
        return
    later = f"epoch {done}" if done == epoch + 1 else f"epochs {epoch + 1}-{done}"
    why = f"so this would drop {later}" if epoch < done else "which is another point of another run"
    raise ckpt.CheckpointError(
        f"--resume {checkpoint} holds epoch {epoch} of the run in {folder}, whose {ckpt.LAST} holds epoch {done}; "
        f"a run continues from its last epoch, {why}: give --resume {folder} to continue from epoch {done}, or "
        f"copy the file to NEW/{ckpt.LAST} and give --resume NEW to continue from epoch {epoch} in another folder")


def _old_flags(args: argparse.Namespace) -> list[str]:
    """``--set``/``--opts`` overrides, then ``--batch-size`` and ``--data-path`` (which win, as in
    the old ``main.py``)."""
    overrides = list(args.set)
    if args.batch_size is not None:
        overrides.append(f"DATA.BATCH_SIZE={args.batch_size}")
    if args.data_path:
        overrides.append(f"DATA.ROOT={args.data_path}")
    return overrides


def _train(args: argparse.Namespace) -> int | None:
    from . import checkpoint as ckpt
    from .engine import fit
    from .runstate import stored_config
    from .runtime import rank_and_world

    overrides = _old_flags(args)
    if args.throughput:
        return _throughput(args, overrides)
    output, resume, checkpoint = args.output, bool(args.resume), None
    if isinstance(args.resume, str):
        folder, checkpoint = _resume_target(args.resume, output)
        output = str(folder)
    if args.eval:
        return _evaluate(checkpoint or (Path(output) / ckpt.BEST if output else None), overrides)
    if checkpoint is not None:
        _continue_from(checkpoint, Path(output))
    if output:
        overrides.append(f"OUTPUT={output}")
    if resume and not args.config:
        if not output:
            raise ConfigError("--resume needs --output, the folder of the run to continue")
        config = stored_config(ckpt.load_checkpoint(Path(output) / ckpt.LAST), overrides)
    else:
        config = load_config(args.config, overrides)
    history = fit(config, resume=resume, overwrite=args.overwrite)
    if history and rank_and_world()[0] == 0:
        best = ckpt.best_row(history)
        print(f"best val acc {best['val_acc']:.2f}% (epoch {best['epoch']}); run folder {config.OUTPUT}")


def _evaluate(checkpoint: Path | None, overrides: list[str]) -> None:
    """``train --eval``: the old ``EVAL_MODE``, i.e. validate a checkpoint and stop."""
    from .runtime import rank_and_world
    from .submission import predict

    if checkpoint is None:
        raise ConfigError("--eval needs the checkpoint to validate: --resume CHECKPOINT_OR_RUN_FOLDER "
                          "or --output RUN_FOLDER (its checkpoint_best.pt)")
    result = predict(checkpoint, overrides, split="val")
    if rank_and_world()[0] == 0:
        print(f"{checkpoint}: val acc {result['acc']:.2f}%, val loss {result['loss']:.4f} "
              f"on {result['count']:,} images")


def _throughput(args: argparse.Namespace, overrides: list[str]) -> int:
    """``train --throughput``: the old ``THROUGHPUT_MODE``, as the ``throughput`` command for the
    config's model, image size, optimizer and classes, up to its batch size."""
    from .data.build import model_classes
    from .throughput import main as throughput

    if not args.config:
        raise ConfigError("--throughput needs --config (or --cfg): the model and sizes to measure")
    config = load_config(args.config, overrides)
    classes = model_classes(config)
    return throughput(["--model", config.MODEL.NAME, "--img-size", str(config.DATA.IMG_SIZE),
                       "--num-classes", str(classes), "--max-batch-size", str(config.DATA.BATCH_SIZE),
                       "--optimizer", config.TRAIN.OPTIMIZER])


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
    from .data.build import model_classes

    config = load_config(args.config, args.set)
    num_classes = model_classes(config)
    model = build_model_from_config(config, num_classes)
    size = config.DATA.IMG_SIZE
    print(f"{config.MODEL.NAME}, {num_classes} classes, input 3×{size}×{size}")
    print(format_summary(model_summary(model, (3, size, size))))


class _Pairs(argparse.Action):
    """``--opts KEY VALUE KEY VALUE`` appended to ``--set`` as ``KEY=VALUE`` items, in order."""

    def __call__(self, parser, namespace, values, option_string=None):
        if len(values) % 2:
            raise argparse.ArgumentError(self, f"takes KEY VALUE pairs, got an odd number of words: "
                                               f"{' '.join(values)}")
        items = list(getattr(namespace, self.dest, None) or [])
        items += [f"{key}={value}" for key, value in zip(values[::2], values[1::2])]
        setattr(namespace, self.dest, items)


# Commands with their own argument parsers: everything after the command name goes to them.
PASSTHROUGH = {
    "make-hdf5": ("nmeplib.data.make_hdf5", "build a MediumImageNet-format HDF5 file from an image folder tree"),
    "throughput": ("nmeplib.throughput", "training images/s and peak memory vs batch size"),
    "release": ("nmeplib.course.release", "write the student repository: solutions stubbed, worksheet answers blanked"),
    "check": ("nmeplib.grading", "grade AlexNet and ResNet18: parameters, shapes, gradients, forward, training"),
    "reproduce": ("nmeplib.course.reproduce", "run every worksheet experiment through its notebook into a results folder"),
    "worksheet": ("nmeplib.course.worksheet", "rewrite worksheet.md's measured tables and figures from a results folder"),
    "submit": ("nmeplib.handin", "check your models, worksheet and submission, then pack them into one zip"),
    "grade": ("nmeplib.course.grade", "grade a folder of student submissions: grades.csv, Gradescope results"),
    "score": ("nmeplib.course.score", "score a submission.csv against the hidden test labels (the local leaderboard)"),
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m nmeplib", description="Train, inspect and submit image classifiers.")
    sub = p.add_subparsers(dest="command", required=True)
    kv = dict(nargs="+", default=[], metavar="KEY=VALUE",
              help="config overrides, e.g. TRAIN.LR=0.01 DATA.BATCH_SIZE=64 (old course key names too)")
    pairs = dict(nargs="+", dest="set", action=_Pairs, metavar="KEY VALUE",
                 help="overrides as the old course code took them: --opts TRAIN.EPOCHS 10 PRINT_FREQ 1 "
                      "is --set TRAIN.EPOCHS=10 PRINT_FREQ=1")
    config_help = "a shipped config name (lenet_base, ...) or a YAML path, also an old course config (--cfg)"

    t = sub.add_parser("train", help="train a model from a config")
    t.add_argument("--config", "--cfg", dest="config", metavar="NAME_OR_PATH", help=config_help)
    t.add_argument("--set", action="extend", **kv)
    t.add_argument("--opts", **pairs)
    t.add_argument("--output", help="run folder (sets OUTPUT)")
    t.add_argument("--resume", nargs="?", const=True, default=False, metavar="PATH",
                   help="continue the run in --output from checkpoint_last.pt; with PATH (the old course "
                        "code's form), continue the run in PATH's folder: PATH is that folder or a checkpoint "
                        "in it, and stands for --resume --output FOLDER")
    t.add_argument("--overwrite", action="store_true", help="replace the run that --output holds")
    old = t.add_argument_group("the old course code's flags (main.py)")
    old.add_argument("--batch-size", type=int, metavar="N", help="sets DATA.BATCH_SIZE (after --set/--opts)")
    old.add_argument("--data-path", metavar="PATH", help="sets DATA.ROOT (after --set/--opts)")
    old.add_argument("--eval", action="store_true",
                     help="only validate a checkpoint: --resume CHECKPOINT (or a run folder, or --output FOLDER: "
                          "its checkpoint_best.pt); the same as predict --split val")
    old.add_argument("--throughput", action="store_true",
                     help="only measure training images/s of the config's model up to its DATA.BATCH_SIZE "
                          "(the throughput command)")
    t.set_defaults(run=_train)

    pr = sub.add_parser("predict", help="write a Kaggle submission.csv from a checkpoint")
    pr.add_argument("--checkpoint", required=True)
    pr.add_argument("--set", action="extend", **kv)
    pr.add_argument("--opts", **pairs)
    pr.add_argument("--out", default="submission.csv")
    pr.add_argument("--split", default="test", choices=("train", "val", "test"))
    pr.set_defaults(run=_predict)

    s = sub.add_parser("summary", help="layers, output shapes and parameter counts of a config's model")
    s.add_argument("--config", "--cfg", dest="config", metavar="NAME_OR_PATH", required=True, help=config_help)
    s.add_argument("--set", action="extend", **kv)
    s.add_argument("--opts", **pairs)
    s.set_defaults(run=_summary)

    for name, (_, help_text) in PASSTHROUGH.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return p


# What an interrupted command's user does next; the other commands simply start again.
RESUME_HINTS = {"train": "; continue the run with the same command and --resume",
                "reproduce": "; run the same command again: finished experiments are kept and this one resumes"}


def main(argv: list[str] | None = None) -> int:
    from .data.loaders import worker_error

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in PASSTHROUGH:
        name = PASSTHROUGH[argv[0]][0]
        if name.startswith("nmeplib.course.") and not (Path(__file__).parent / "course").is_dir():
            print(f"error: {argv[0]} is a course-staff command, not in the student release", file=sys.stderr)
            return 2
        module = importlib.import_module(name)
        run = lambda: module.main(argv[1:])  # noqa: E731
        if argv[:2] == ["check", "worksheet"]:   # the worksheet's check, beside the models'
            from .handin import check_worksheet_main
            run = lambda: check_worksheet_main(argv[2:])  # noqa: E731
    else:
        args = parser().parse_args(argv)
        run = lambda: args.run(args)  # noqa: E731
    from .runtime import barrier, init_distributed, shutdown_distributed

    try:
        init_distributed()
        status = run()
        # Every rank ends the command together: a rank leaving the process group while another
        # still works (rank 0 writing predict's submission) can abort at exit in gloo's threads.
        barrier()
    except (NmeplibError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:   # a loader worker that died while the training step ran
        failure = worker_error(err)
        if failure is None:
            raise
        print(f"error: {failure}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted{RESUME_HINTS.get(argv[0] if argv else '', '')}", file=sys.stderr)
        return 130
    finally:
        shutdown_distributed()
    return status or 0
