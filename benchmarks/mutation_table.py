"""The mutation table of a mutmut run: one row per module, from the ``.meta`` files mutmut writes.

    python benchmarks/mutation_table.py MUTANTS_DIR [KILLED_ALONE.txt]
    python benchmarks/mutation_table.py --timeouts MUTANTS_DIR > KILLED_ALONE.txt

mutmut's time limits are wall time as well as CPU time, so on busy cores a mutant can hit one while
failing a test slowly, or while passing every test. ``--timeouts`` runs each such mutant's tests
again alone (those mutmut found to reach the mutated function, fastest first, stopping at the first
failure) and prints the names of those a test fails with: they count as killed, the other
time-limit mutants as survived. Score: killed / tested.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code   # mutmut's own names of its exit codes


def rows(mutants: Path, killed_alone: set[str]) -> list[dict]:
    """One dict per mutated module: counts by outcome and the score."""
    table = []
    for meta in sorted(mutants.rglob("*.py.meta")):
        data = json.loads(meta.read_text())
        codes = data.get("exit_code_by_key", {})
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
                      "score": 100 * count["killed"] / n})
    return table


def killed_alone(mutants: Path) -> list[str]:
    """The time-limit mutants that a test fails with when run alone (see the module's docstring)."""
    stats = json.loads((mutants / "mutmut-stats.json").read_text())
    tests_of, seconds = stats["tests_by_mangled_function_name"], stats["duration_by_test"]
    killed = []
    for meta in sorted(mutants.rglob("*.py.meta")):
        for name, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            if code is None or status_by_exit_code[code] != "timeout":
                continue
            tests = sorted(tests_of.get(re.sub(r"__mutmut_\d+$", "", name), ()), key=lambda t: seconds.get(t, 0))
            env = {**os.environ, "MUTANT_UNDER_TEST": name}
            try:
                done = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                                       "-m", "not slow", *tests], cwd=mutants, env=env, capture_output=True,
                                      timeout=120 + 10 * sum(seconds.get(t, 0) for t in tests))
                failed = done.returncode != 0
            except subprocess.TimeoutExpired:   # still endless alone: the mutant hangs a test
                failed = True
            print(f"time limit, {'and a test fails' if failed else 'but every test passes'} alone: {name}",
                  file=sys.stderr)
            if failed:
                killed.append(name)
    return killed


def main(argv: list[str]) -> int:
    if argv and argv[0] == "--timeouts":
        print("\n".join(killed_alone(Path(argv[1]))))
        return 0
    mutants = Path(argv[0])
    alone = set(Path(argv[1]).read_text().split()) if len(argv) > 1 and Path(argv[1]).is_file() else set()
    print("| module | mutants tested (of all) | killed | survived | no tests | score |")
    print("|---|---|---|---|---|---|")
    for r in rows(mutants, alone):
        print(f"| `{r['module']}` | {r['mutants']} (of {r['of']}) | {r['killed']} | {r['survived']} | "
              f"{r['no tests']} | {r['score']:.0f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
