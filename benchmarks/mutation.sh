#!/usr/bin/env bash
# Mutation score of nmeplib's core modules: how many planted bugs the fast tests catch.
#
#   bash benchmarks/mutation.sh                      # every core module (hours on 2 cores)
#   TESTS=tests/test_schedule.py bash benchmarks/mutation.sh nmeplib/optim.py   # one module, its own tests
#
# Runs mutmut (installed on demand; not part of CI) on a clean clone of HEAD in a temporary
# folder, with the tests in $TESTS (default: all of tests/) that are not marked slow; mutmut runs,
# for each mutant, only the tests that reach the mutated function, and prints the summary and each surviving
# mutant's name (`mutmut show NAME` in that folder prints its diff). The working tree is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."
MODULES=("$@")
if [ ${#MODULES[@]} -eq 0 ]; then
  MODULES=(nmeplib/config.py nmeplib/optim.py nmeplib/engine.py nmeplib/checkpoint.py nmeplib/submission.py
           nmeplib/data/augment.py nmeplib/data/loaders.py nmeplib/data/hdf5.py nmeplib/data/stream.py)
fi
python -m pip install --quiet --disable-pip-version-check "mutmut==3.8.1"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/nmeplib-mutation.XXXXXX")"
git clone --quiet . "$WORK"
cd "$WORK"
{
  echo
  echo "[tool.mutmut]"
  echo 'source_paths = ["nmeplib/"]'
  printf 'only_mutate = [%s]\n' "$(printf '"%s", ' "${MODULES[@]}" | sed 's/, $//')"
  printf 'pytest_add_cli_args_test_selection = [%s]\n' "$(printf '"%s", ' ${TESTS:-tests/} | sed 's/, $//')"
  echo 'pytest_add_cli_args = ["-p", "no:cacheprovider", "-m", "not slow", "-q"]'
  echo 'process_isolation = "forkserver"  # torch is not fork-safe after the test run'
  echo 'also_copy = ["conftest.py", "benchmarks/", "notebooks/"]'
} >> pyproject.toml
start=$(date +%s)
mutmut run --max-children "$(nproc)" > mutmut.log 2>&1 || true
echo "mutmut on ${MODULES[*]}: $(( $(date +%s) - start )) s; results in $WORK"
tail -c 300 mutmut.log | tr '\r' '\n' | tail -1
mutmut results
