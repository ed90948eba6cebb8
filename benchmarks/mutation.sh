#!/usr/bin/env bash
# Mutation score of nmeplib's modules: how many planted bugs the fast tests catch.
#
#   bash benchmarks/mutation.sh                      # the core modules together (hours on 2 cores)
#   bash benchmarks/mutation.sh nmeplib/legacy.py    # one module, with the tests mapped to it (TESTS_FOR below)
#   bash benchmarks/mutation.sh nmeplib/workbook/    # every module of a folder, together
#   TESTS=tests/test_schedule.py bash benchmarks/mutation.sh nmeplib/optim.py   # one module, tests of your choice
#   SAMPLE=150 bash benchmarks/mutation.sh nmeplib/engine.py   # a seeded sample of its mutants
#   SAMPLE=20 bash benchmarks/mutation.sh all        # every module of the package, 20 mutants of each
#   bash benchmarks/mutation.sh --tests nmeplib/sweeps.py       # print the tests a run would use, run nothing
#   bash benchmarks/mutation.sh --again /tmp/nmeplib-mutation.XXXX   # a finished run's survivors against HEAD's tests
#   CONTINUE='legacy|sweeps' bash benchmarks/mutation.sh --again DIR  # ... and the sample's untested mutants of these
#
# Runs mutmut (installed on demand; not part of CI) on a clean clone of HEAD in a temporary
# folder, with the fast tests (not marked slow) in $TESTS, or else those TESTS_FOR maps the given
# modules to (a module it does not map: all of tests/); mutmut runs, for each mutant, only the tests
# that reach the mutated function, and prints the summary and each surviving mutant's name
# (`mutmut show NAME` in that folder prints its diff), then a table with a row per module
# (benchmarks/mutation_table.py): a mutant that hit mutmut's time limit counts as killed when a
# test fails with it run alone, else as survived; the score is killed / tested, and survivors
# still include equivalent mutants (docs/testing.md sorts them). The working tree is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."

# Module (or folder/, for every module in it) -> the test files that pin its behaviour.
declare -A TESTS_FOR=(
  [nmeplib/config.py]="tests/test_config.py tests/test_legacy.py tests/test_user_facts.py"
  [nmeplib/legacy.py]="tests/test_legacy.py tests/test_config.py tests/test_user_facts.py"
  [nmeplib/optim.py]="tests/test_schedule.py tests/test_engine.py tests/test_user_facts.py"
  [nmeplib/engine.py]="tests/test_engine.py tests/test_runs.py tests/test_schedule.py tests/test_user_facts.py"
  [nmeplib/checkpoint.py]="tests/test_runs.py tests/test_engine.py tests/test_user_facts.py"
  [nmeplib/submission.py]="tests/test_submission.py tests/test_user_facts.py"
  [nmeplib/tracking.py]="tests/test_tracking.py tests/test_cli.py tests/test_user_facts.py"
  [nmeplib/errors.py]="tests/test_data_faults.py tests/test_config.py tests/test_hdf5.py"
  [nmeplib/files.py]="tests/test_runs.py tests/test_submission.py tests/test_hdf5.py tests/test_data_faults.py"
  [nmeplib/runstate.py]="tests/test_runs.py tests/test_engine.py tests/test_sweeps.py"
  [nmeplib/handin.py]="tests/test_handin.py tests/test_grading.py"
  [nmeplib/course/results.py]="tests/test_results.py tests/test_reproduce.py tests/test_worksheet.py"
  [nmeplib/course/score.py]="tests/test_score.py"
  [nmeplib/course/grade.py]="tests/test_grade_parts.py tests/test_grade.py"
  [nmeplib/course/grade_worker.py]="tests/test_grade_parts.py tests/test_grade.py"
  [nmeplib/sweeps.py]="tests/test_sweeps.py tests/test_user_facts.py"
  [nmeplib/throughput.py]="tests/test_throughput.py tests/test_user_facts.py"
  [nmeplib/grading.py]="tests/test_grading.py tests/test_user_facts.py"
  [nmeplib/course/release.py]="tests/test_release.py tests/test_user_facts.py"
  [nmeplib/course/reproduce.py]="tests/test_reproduce.py tests/test_notebook_params.py tests/test_user_facts.py"
  [nmeplib/course/worksheet.py]="tests/test_worksheet.py tests/test_user_facts.py"
  [nmeplib/workbook/]="tests/test_workbook_settings.py tests/test_workbook_views.py tests/test_workbook_runs.py tests/test_notebooks.py tests/test_notebook_params.py tests/test_runtime.py tests/test_user_facts.py"
  [nmeplib/plots.py]="tests/test_plots.py tests/test_user_facts.py"
  [nmeplib/tables.py]="tests/test_tables.py"
  [nmeplib/runtime.py]="tests/test_runtime.py tests/test_engine.py"
  [nmeplib/distributed.py]="tests/test_launch.py tests/test_distributed.py"
  [nmeplib/cli.py]="tests/test_cli.py tests/test_legacy.py tests/test_runs.py"
  [nmeplib/models/]="tests/test_models.py tests/test_grading.py"
  [nmeplib/data/augment.py]="tests/test_augment.py tests/test_data.py"
  [nmeplib/data/loaders.py]="tests/test_data.py tests/test_workers.py tests/test_augment.py"
  [nmeplib/data/stream.py]="tests/test_workers.py tests/test_hdf5.py"
  [nmeplib/data/hdf5.py]="tests/test_hdf5.py tests/test_data_faults.py"
  [nmeplib/data/make_hdf5.py]="tests/test_hdf5.py tests/test_data_faults.py"
  [nmeplib/data/cifar.py]="tests/test_data.py tests/test_data_faults.py tests/test_user_facts.py"
  [nmeplib/data/build.py]="tests/test_data.py tests/test_hdf5.py tests/test_workers.py tests/test_data_faults.py"
  [nmeplib/data/digits.py]="tests/test_data.py tests/test_engine.py"
  [nmeplib/data/]="tests/test_data.py tests/test_data_faults.py"
)

# The tests for the given modules: their TESTS_FOR entries (a module's own, else its folder's), joined.
tests_for() {
  local module key found=() missing=0
  for module in "$@"; do
    key=""
    if [ -n "${TESTS_FOR[$module]+x}" ]; then key=$module
    elif [ -n "${TESTS_FOR[$(dirname "$module")/]+x}" ]; then key="$(dirname "$module")/"
    fi
    if [ -z "$key" ]; then missing=1; else found+=(${TESTS_FOR[$key]}); fi
  done
  if [ "$missing" -eq 1 ] || [ ${#found[@]} -eq 0 ]; then echo "tests/"; return; fi
  printf '%s\n' "${found[@]}" | awk '!seen[$0]++' | tr '\n' ' ' | sed 's/ $//'
}

SHOW_TESTS=0 AGAIN=""
while [ $# -gt 0 ]; do
  case "$1" in
    --tests) SHOW_TESTS=1; shift ;;
    --again) AGAIN="${2:?--again needs the folder of a finished run}"; shift 2 ;;
    *) break ;;
  esac
done
if [ -n "$AGAIN" ]; then
  # The mutants a finished run tested that were not killed, tested again with this checkout's tests
  # and code: functions changed since are mutated afresh (their sampled names then name new mutants).
  REPO="$PWD"
  cd "$AGAIN"
  start=$(date +%s)
  mutmut results --all true | awk -F': ' '$2 != "not checked" {gsub(/ /, "", $1); print $1}' > sampled.txt
  git fetch -q "$REPO" HEAD && git checkout -q FETCH_HEAD -- nmeplib tests benchmarks
  mapfile -t MODULES < <(sed -E 's/\.x(_|ǁ).*//; s|\.|/|g; s|$|.py|' sampled.txt | sort -u)
  TESTS="$(tests_for "${MODULES[@]}")"   # this checkout's map: new test files included
  sed -i "s|^pytest_add_cli_args_test_selection = .*|pytest_add_cli_args_test_selection = [$(printf '"%s", ' $TESTS | sed 's/, $//')]|" pyproject.toml
  mapfile -t NAMES < <(mutmut results --all true | awk -F': ' '$2 != "killed" {gsub(/ /, "", $1); print $1}' |
                       grep -Fxf sampled.txt)
  if [ -n "${CONTINUE:-}" ] && [ -f picked.txt ]; then   # CONTINUE=REGEX: also the sample's untested mutants
    mapfile -t -O "${#NAMES[@]}" NAMES < <(grep -vFxf sampled.txt picked.txt | grep -E "$CONTINUE" || true)
  fi
  echo "again: ${#NAMES[@]} mutants (of $(wc -l < sampled.txt) tested)"
  [ ${#NAMES[@]} -eq 0 ] || mutmut run --max-children "$(nproc)" "${NAMES[@]}" >> mutmut.log 2>&1 || true
  mapfile -t FRESH < <(mutmut results --all true | awk -F': ' '$2 == "not checked" {gsub(/ /, "", $1); print $1}' |
                       grep -Fxf sampled.txt)   # sampled names in functions changed since
  echo "again, changed functions: ${#FRESH[@]} sampled mutants"
  [ ${#FRESH[@]} -eq 0 ] || mutmut run --max-children "$(nproc)" "${FRESH[@]}" >> mutmut.log 2>&1 || true
  WORK="$AGAIN"
else
MODULES=()
if [ $# -eq 0 ]; then
  MODULES=(nmeplib/config.py nmeplib/optim.py nmeplib/engine.py nmeplib/checkpoint.py nmeplib/submission.py
           nmeplib/data/augment.py nmeplib/data/loaders.py nmeplib/data/hdf5.py nmeplib/data/stream.py)
fi
for arg in "$@"; do
  case "$arg" in   # a folder (or all) stands for its modules; package markers hold no logic
    all) mapfile -t -O "${#MODULES[@]}" MODULES < <(git ls-files 'nmeplib/*.py' | grep -vE '/__(init|main)__\.py$') ;;
    */) [ -d "$arg" ] || { echo "error: $arg: no such folder" >&2; exit 2; }
        mapfile -t -O "${#MODULES[@]}" MODULES < <(git ls-files "$arg*.py" | grep -vE '/__(init|main)__\.py$') ;;
    *) [ -f "$arg" ] || { echo "error: $arg: no such module (give paths like nmeplib/legacy.py, a folder/, or all)" >&2; exit 2; }
       MODULES+=("$arg") ;;
  esac
done
TESTS="${TESTS:-$(tests_for "${MODULES[@]}")}"
if [ "$SHOW_TESTS" -eq 1 ]; then echo "$TESTS"; exit 0; fi
echo "modules: ${MODULES[*]}"
echo "tests: $TESTS"

python -m pip install --quiet --disable-pip-version-check "mutmut==3.8.1"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/nmeplib-mutation.XXXXXX")"
git clone --quiet . "$WORK"
cd "$WORK"
{
  echo
  echo "[tool.mutmut]"
  echo 'source_paths = ["nmeplib/"]'
  printf 'only_mutate = [%s]\n' "$(printf '"%s", ' "${MODULES[@]}" | sed 's/, $//')"
  printf 'pytest_add_cli_args_test_selection = [%s]\n' "$(printf '"%s", ' $TESTS | sed 's/, $//')"
  echo 'pytest_add_cli_args = ["-p", "no:cacheprovider", "-m", "not slow", "-q"]'
  echo 'process_isolation = "forkserver"  # torch is not fork-safe after the test run'
  echo 'also_copy = ["conftest.py", "benchmarks/", "notebooks/", "worksheet.md", "worksheet_figures/", "results/", "docs/", "README.md", "data_links.md", "requirements.txt", ".ci/"]'
} >> pyproject.toml
start=$(date +%s)
ALL=()
# mutmut's generation step alone writes mutants/, the copy the tests run in; it is then made a git
# checkout (the release and its tests list git-tracked files) before any test runs there.
python - > mutmut.log 2>&1 <<'PY'
import os
from mutmut.__main__ import (copy_also_copy_files, copy_src_dir, create_mutants, set_mutant_under_test,
                             setup_source_paths, store_lines_covered_by_tests)
set_mutant_under_test("mutant_generation")
os.makedirs("mutants", exist_ok=True)
copy_src_dir(); copy_also_copy_files(); setup_source_paths(); store_lines_covered_by_tests()
print(create_mutants(os.cpu_count() or 2))
PY
(cd mutants && git init -q && printf '*.meta\n*.spans\nmutmut-stats.json\n__pycache__/\n' > .git/info/exclude &&
   git add -A && git -c user.name=mutation -c user.email=mutation@localhost commit -qm mutants)
if [ -n "${SAMPLE:-}" ]; then
  # SAMPLE=N: N mutants of each module drawn with a fixed seed from all of its mutants, for modules
  # whose tests make a full run take hours; the scores are then estimates.
  mapfile -t ALL < <(mutmut results --all true | awk -F: '/not checked/ {gsub(/ /, "", $1); print $1}')
  PICK=()
  for module in $(printf '%s\n' "${ALL[@]}" | sed -E 's/\.x(_|ǁ).*//' | sort -u); do
    mapfile -t -O "${#PICK[@]}" PICK < <(printf '%s\n' "${ALL[@]}" | grep -F "$module.x" |
                                          shuf -n "$SAMPLE" --random-source=<(yes))
  done
  echo "sample: ${#PICK[@]} of ${#ALL[@]} mutants"
  printf '%s\n' "${PICK[@]}" > picked.txt
  mutmut run --max-children "$(nproc)" "${PICK[@]}" >> mutmut.log 2>&1 || true
else
  mutmut run --max-children "$(nproc)" >> mutmut.log 2>&1 || true
fi
fi   # --again
# A mutant that hit mutmut's time limit on busy cores is tested again alone (mutation_table.py).
python benchmarks/mutation_table.py --timeouts mutants > killed-alone.txt
echo "mutmut on ${MODULES[*]}: $(( $(date +%s) - start )) s; results in $WORK"
tail -c 300 mutmut.log | tr '\r' '\n' | tail -1
mutmut results
python benchmarks/mutation_table.py mutants killed-alone.txt
