"""Turn a GPU run folder made before ``reproduce`` wrote ``results/`` into results folders.

    python benchmarks/import_gpu_run.py GPU_RESULTS_DIR [--results results]

GPU_RESULTS_DIR holds what a run of this project on a GPU left (a README naming the commit,
the machine and the commands; ``alexnet_base_metrics.jsonl``, the AlexNet training run;
``bench.txt`` and ``bench.json``, the benchmark whose first 30 lines are ResNet18's epochs; the
README's compute-only throughput figures). Each becomes the results folder of the experiment it
answers, with a manifest that gives that folder's provenance (commit, machine, torch, command),
so ``python -m nmeplib worksheet`` shows it beside the runs ``reproduce`` made:

* 03_training: AlexNet's 30 epochs (``alexnet_base``);
* 06_resnet: ResNet18's 30 epochs (``resnet18_base``, the benchmark's time-to-accuracy run);
* 05_throughput: images/s against batch size: ResNet18 until out of memory (``python -m nmeplib
  throughput --model resnet18`` on the same machine that day, as benchmarks/README.md quotes it),
  AlexNet and LeNet from the README's ``measure_throughput`` figures (AdamW, bf16, channels_last).

Nothing here is measured again; a file or line the folder lacks is an error naming it.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nmeplib.course import results as res  # noqa: E402
from nmeplib.files import read_jsonl, write_json, write_jsonl  # noqa: E402

EPOCH = re.compile(r"epoch (\d+)/(\d+)\s+lr (\S+)\s+train loss (\S+) acc (\S+)%\s+val loss (\S+) acc (\S+)%\s+(\d+) img/s")
CIFAR = "CIFAR-10, the JPEG quality-75 copy made by make_cifar10.py"


def readme_facts(text: str) -> dict:
    """Commit, GPU, date, torch and Python versions, CPU count, as the folder's README gives them."""
    def find(pattern: str) -> str:
        match = re.search(pattern, text)
        if not match:
            raise SystemExit(f"error: README: no line matching {pattern!r}")
        return match.group(1)
    return {"commit": find(r"commit `([0-9a-f]+)`"), "gpu": find(r"measured on one (NVIDIA [^(]+?) \("),
            "date": find(r"\((\d{4}-\d{2}-\d{2})\)"), "torch": find(r"torch (\S+?),"),
            "python": find(r"Python (\S+?),"), "cores": int(find(r"(\d+) CPU cores")),
            "alexnet_command": find(r"`alexnet_base\.log`.*?\| `(python -m nmeplib train[^`]*)`"),
            "bench_command": find(r"`bench\.txt`.*?\| `(python benchmarks/throughput\.py[^`]*)`")}


def summary(history: list[dict], config: dict, train_time_s: float) -> dict:
    best = max(history, key=lambda row: row["val_acc"])
    return {"best_val_acc": best["val_acc"], "best_epoch": best["epoch"], "final_val_acc": history[-1]["val_acc"],
            "epochs": len(history), "train_time_s": train_time_s, "num_classes": 10, "config": config}


def throughput_rows(text: str) -> list[dict]:
    """The README's "batch → img/s (memory)" figures of each model, as throughput.csv rows."""
    line = next((l for l in text.splitlines() if "Compute-only ceiling vs batch size" in l), None)
    if line is None:
        raise SystemExit("error: README: no 'Compute-only ceiling vs batch size' figures")
    block = text[text.index(line):].split("\n- ", 1)[0]
    rows = []
    for model, figures in re.findall(r"(ResNet18|LeNet|AlexNet)[^:]*:\s*(.*?)(?=;\s*(?:ResNet18|LeNet|AlexNet)|\.\s|$)",
                                     block.replace("\n", " ")):
        for batch, speed, memory in re.findall(r"([\d,]+) → ([\d,]+)(?: img/s)?(?: \(([\d.]+) GB)?", figures):
            rows.append({"model": model.lower(), "batch_size": int(batch.replace(",", "")),
                         "img_per_s": float(speed.replace(",", "")), "step_ms": "",
                         "peak_mem_mb": float(memory) * 1024 if memory else "", "oom": False})
    if not rows:
        raise SystemExit("error: README: no 'batch → img/s' figures after 'Compute-only ceiling'")
    return rows


def command_rows(text: str) -> list[dict]:
    """ResNet18's rows of ``python -m nmeplib throughput --model resnet18`` run until out of memory
    on the same machine, as benchmarks/README.md quotes them (the run's own output was not kept)."""
    match = re.search(r"throughput --model resnet18` on the same machine ran batch sizes 1 to ([\d,]+) in\s+\d+ s\s+"
                      r"and printed each row as it was measured:\s+(.*?); ([\d,]+) ran out of\s+memory", text, re.S)
    if not match:
        raise SystemExit("error: benchmarks/README.md: no quoted run of 'throughput --model resnet18'")
    rows = []
    for speed, batch, memory in re.findall(r"([\d,]+)(?: img/s)? at ([\d,]+)(?: \(([\d.]+) GB)?",
                                           match.group(2).replace("\n", " ")):
        rows.append({"model": "resnet18", "batch_size": int(batch.replace(",", "")),
                     "img_per_s": float(speed.replace(",", "")), "step_ms": "",
                     "peak_mem_mb": float(memory) * 1024 if memory else "", "oom": False})
    rows.append({"model": "resnet18", "batch_size": int(match.group(3).replace(",", "")), "img_per_s": "",
                 "step_ms": "", "peak_mem_mb": "", "oom": True})
    return rows


def write_folder(root: Path, experiment: str, parts: str, facts: dict, command: str, files: dict) -> Path:
    machine = {"gpu": facts["gpu"], "cpu": None, "cores": facts["cores"], "torch": facts["torch"],
               "python": facts["python"], "load_average": None}
    manifest = {"experiment": experiment, "parts": parts, "scale": "full", "data": CIFAR, "command": command,
                "commit": facts["commit"], "date": facts["date"], "machine": machine, "parameters": {},
                "elapsed_s": None, "imported_from": facts["source"]}
    folder = root / experiment / res.folder_name(manifest)
    for name, content in files.items():
        path = folder / name
        if name.endswith(".jsonl"):
            write_jsonl(path, content)
        elif name.endswith(".json"):
            write_json(path, content)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
    write_json(folder / res.MANIFEST, manifest)
    return folder


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("source", type=Path, help="a GPU run folder (README.md, alexnet_base_metrics.jsonl, bench.*)")
    p.add_argument("--results", type=Path, default=Path(res.ROOT), help="results folder (default: results/)")
    args = p.parse_args(argv)
    text = (args.source / "README.md").read_text()
    facts = {**readme_facts(text), "source": args.source.name}

    alexnet = read_jsonl(args.source / "alexnet_base_metrics.jsonl")
    config = {"MODEL": {"NAME": "alexnet"}, "DATA": {"DATASET": "cifar10", "IMG_SIZE": 70, "BATCH_SIZE": 256,
                                                     "AUGMENT": "course", "TRAIN_SUBSET": 0}, "TRAIN": {"LR": 3e-4}}
    made = [write_folder(args.results, "03_training", "4.2, 5.0, 5.1", facts, facts["alexnet_command"], {
        "runs/alexnet/metrics.jsonl": alexnet,
        "runs/alexnet/summary.json": summary(alexnet, config, sum(r["train_time_s"] for r in alexnet))})]

    epochs = [EPOCH.match(line) for line in (args.source / "bench.txt").read_text().splitlines()[:30]]
    if not all(epochs):
        raise SystemExit("error: bench.txt: the first 30 lines are not ResNet18's epoch lines")
    resnet = [{"epoch": int(m[1]), "lr": float(m[3]), "train_loss": float(m[4]), "train_acc": float(m[5]),
               "val_loss": float(m[6]), "val_acc": float(m[7]), "train_img_per_s": float(m[8])} for m in epochs]
    train_images = 50_000   # CIFAR-10's training split: each epoch's time from its measured img/s
    train_time = sum(train_images / row["train_img_per_s"] for row in resnet)
    config = {"MODEL": {"NAME": "resnet18"}, "DATA": {"DATASET": "cifar10", "IMG_SIZE": 32, "BATCH_SIZE": 256,
                                                      "AUGMENT": "standard", "TRAIN_SUBSET": 0}, "TRAIN": {"LR": 2e-3}}
    made.append(write_folder(args.results, "06_resnet", "6.0", facts,
                             facts["bench_command"] + "  # its time-to-accuracy run: resnet18_base, 30 epochs", {
                                 "runs/metrics.jsonl": resnet, "runs/summary.json": summary(resnet, config, train_time)}))

    quoted = (Path(__file__).resolve().parent / "README.md").read_text()
    rows = command_rows(quoted) + [row for row in throughput_rows(text) if row["model"] != "resnet18"]
    table = "model,batch_size,img_per_s,step_ms,peak_mem_mb,oom\n" + "".join(
        f"{r['model']},{r['batch_size']},{r['img_per_s']},{r['step_ms']},{r['peak_mem_mb']},{r['oom']}\n"
        for r in rows)
    made.append(write_folder(args.results, "05_throughput", "5.4", facts,
                             "python -m nmeplib throughput --model resnet18 (until out of memory; its rows as "
                             "benchmarks/README.md quotes them); lenet and alexnet: measure_throughput (AdamW, bf16, "
                             "channels_last) as the folder's README quotes them", {"runs/throughput.csv": table}))
    for folder in made:
        print(f"wrote {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
