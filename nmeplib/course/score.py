"""``python -m nmeplib score SUBMISSION LABELS``: a Kaggle-style score on the hidden test labels.

Course staff keep the test split's true labels apart from the HDF5 file (``make-hdf5
--test-labels``, a file in the submission's own ``Id,Category`` format) and score a student's
``submission.csv`` against them: the local leaderboard of Part 7. Both files are read with
``read_submission``, so a wrong header, ids out of order or a row count that differs is one
``error:`` line naming the file.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..errors import NmeplibError
from ..files import write_json


class ScoreError(NmeplibError, ValueError):
    """A submission or labels file that cannot be scored."""


def score(submission: str | Path, labels: str | Path) -> dict[str, Any]:
    """Accuracy (%) of ``submission`` on ``labels``, with the counts behind it."""
    from ..submission import read_submission

    try:
        truth = read_submission(labels)
        predicted = read_submission(submission)
    except (OSError, ValueError) as err:
        raise ScoreError(str(err)) from None
    if len(predicted) != len(truth):
        raise ScoreError(f"{submission}: {len(predicted)} rows, but {labels} has {len(truth)} test images")
    correct = int((predicted == truth).sum())
    return {"submission": str(submission), "labels": str(labels), "rows": len(truth), "correct": correct,
            "accuracy": round(100.0 * correct / len(truth), 4) if len(truth) else 0.0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m nmeplib score",
                                description="Score a submission.csv against the hidden test labels.")
    p.add_argument("submission", help="a student's submission.csv (Id,Category)")
    p.add_argument("labels", help="the test labels, as make-hdf5 --test-labels writes them")
    p.add_argument("--out", metavar="JSON", help="also write the score here")
    args = p.parse_args(argv)
    result = score(args.submission, args.labels)
    if args.out:
        write_json(args.out, result)
    print(f"{args.submission}: {result['accuracy']:.2f}% ({result['correct']:,} of {result['rows']:,} test images)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
