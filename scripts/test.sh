#!/usr/bin/env bash
# Set up everything the test suite needs, then run it:
#
#   bash scripts/test.sh [PYTEST ARGS...]
#
# 1. `bash scripts/install.sh all`: the core, test, examples, tf, diffusers, mmdet (.venv) and
#    detectron2 (its own venv); the first time on a machine about 25 min on 2 cores (mostly
#    mmcv's ops), later about 20 s.
# 2. The suite in .venv, but for tests/formats/test_detectron2.py.
# 3. tests/formats/test_detectron2.py in the Detectron2 venv.
# PYTEST ARGS go to both runs; paths among them go to the run they belong to (a run given no
# path of its own is skipped). ACCELFLOW_TEST_INSTALL=0 skips step 1.
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
started=$SECONDS
D2_TESTS=tests/formats/test_detectron2.py

if [ "${ACCELFLOW_TEST_INSTALL:-1}" != 0 ]; then
    bash scripts/install.sh all || exit
fi

# Split the arguments: options for both runs; paths for the run that owns them.
# (an option's value given as the next argument is no path: `--deselect tests/x.py::t`)
takes_value='^(-k|-m|-p|-n|-c|-o|-W|--deselect|--ignore|--ignore-glob|--rootdir|--basetemp|--junitxml|--junit-xml|--durations|--maxfail|--dist|--tb|--confcutdir|--log-level)$'
options=() main_paths=() d2_paths=() any_path=0 previous=
for arg in "$@"; do
    file=${arg%%::*}
    if [[ $arg != -* && -e $file && ! $previous =~ $takes_value ]]; then
        any_path=1
        case "$(realpath -m "$file")/" in
            "$(realpath -m $D2_TESTS)/"*) d2_paths+=("$arg") ;;  # the file or one of its tests
            *)
                main_paths+=("$arg")
                # a folder holding the Detectron2 tests: they run in their venv
                [[ $(realpath -m $D2_TESTS) == "$(realpath -m "$file")"/* ]] && d2_paths+=("$D2_TESTS")
                ;;
        esac
    else
        options+=("$arg")
    fi
    previous=$arg
done
if [ "$any_path" = 0 ]; then
    main_paths=(tests) d2_paths=("$D2_TESTS")
fi

export PREFECT_SERVER_ANALYTICS_ENABLED=false
codes=()
if [ ${#main_paths[@]} -gt 0 ]; then
    rc=0
    step "tests in .venv (all but $D2_TESTS)" \
        .venv/bin/python -m pytest "${options[@]}" --ignore="$D2_TESTS" "${main_paths[@]}" || rc=$?
    codes+=("$rc")
fi
if [ ${#d2_paths[@]} -gt 0 ]; then
    D2_VENV=$(bash scripts/install_detectron2.sh --path)
    # The venv is shared by the clones on this machine: hold its lock, so that its editable
    # accelflow stays this checkout's while the tests run.
    rc=0
    step "Detectron2 tests in $D2_VENV" \
        flock "$D2_VENV.lock" sh -c '"$0" -m pip install -qq --no-deps --no-build-isolation -e . && "$0" -m pytest "$@"' \
        "$D2_VENV/bin/python" "${options[@]}" "${d2_paths[@]}" || rc=$?
    codes+=("$rc")
fi
# pytest's 5 (no tests collected) only counts when no run collected any: `-k mmdet` selects
# nothing among the Detectron2 tests.
status=0
for rc in "${codes[@]}"; do
    if [ "$rc" != 0 ] && [ "$rc" != 5 ] && [ "$status" = 0 ]; then status=$rc; fi
done
if [ "$status" = 0 ] && [[ " ${codes[*]} " != *" 0 "* ]]; then status=5; fi
echo "tests done in $(_minutes $((SECONDS - started))), exit status $status" >&2
exit "$status"
