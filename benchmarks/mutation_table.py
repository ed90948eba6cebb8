"""The mutation table of a mutmut run: one row per module, from the ``.meta`` files mutmut writes.

    python benchmarks/mutation_table.py MUTANTS_DIR [KILLED_ALONE.txt]

KILLED_ALONE.txt names the mutants that hit mutmut's time limit and fail a test when run alone
(``benchmarks/mutation.sh`` writes it); they count as killed, the other time-limit mutants as
survived. Score: killed / tested. "Test time" sums the seconds mutmut spent on each mutant's tests
(mutants run in parallel, so a run's wall time is shorter).
"""
from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code   # mutmut's own names of its exit codes


def rows(mutants: Path, killed_alone: set[str]) -> list[dict]:
    """One dict per mutated module: counts by outcome, score and summed test time."""
    table = []
    for meta in sorted(mutants.rglob("*.py.meta")):
        data = json.loads(meta.read_text())
        codes, durations = data.get("exit_code_by_key", {}), data.get("durations_by_key", {})
        tested = {name: code for name, code in codes.items() if code is not None}
        if not tested:
            continue
        count = Counter()
        for name, code in tested.items():
            status = status_by_exit_code[code]
            if status == "timeout":
                status = "killed" if name in killed_alone else "survived"
            elif status == "segfault":   # the tests' process died with the mutant: caught
                status = "killed"
            count[status if status in ("killed", "no tests") else "survived"] += 1
        n = sum(count.values())
        table.append({"module": str(meta.relative_to(mutants))[:-len(".meta")], "mutants": n, "of": len(codes),
                      "killed": count["killed"], "survived": count["survived"], "no tests": count["no tests"],
                      "score": 100 * count["killed"] / n,
                      "test_s": sum(durations.get(name) or 0 for name in tested)})
    return table


def main(argv: list[str]) -> int:
    mutants = Path(argv[0])
    killed_alone = set(Path(argv[1]).read_text().split()) if len(argv) > 1 and Path(argv[1]).is_file() else set()
    print("| module | mutants tested (of all) | killed | survived | no tests | score | test time |")
    print("|---|---|---|---|---|---|---|")
    for r in rows(mutants, killed_alone):
        print(f"| `{r['module']}` | {r['mutants']} (of {r['of']}) | {r['killed']} | {r['survived']} | "
              f"{r['no tests']} | {r['score']:.0f}% | {r['test_s']:.0f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
