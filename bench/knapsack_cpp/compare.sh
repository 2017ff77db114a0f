#!/bin/bash
# The exact knapsack solver of csrc/knapsack.h at git revision REV ("orig") against the one in the
# working tree ("new"), side by side on the same instances, the C++ solver alone (harness.cpp):
#
#   bench/knapsack_cpp/compare.sh [REV] [FILTER] [REPS]     # defaults: 76aa775 _ 3
#
# FILTER: only the classes whose name (class_R) contains it ("_" matches all). Per class and R:
# mean (largest) ms per instance of CPU time of the thread, each instance's time the least of REPS
# runs; x = orig / new; bad = runs of new whose status was not optimal; "same" when both give the
# same sum of solution values. The two binaries run at the same time, each solving the instances
# one after another on one thread. The old header, the instances (instances.py, 10 per class and R)
# and both binaries go to a temporary folder, removed at the end; nothing is written in the
# repository. KNAPSACK_INSTANCES=FILE uses (or, when missing, writes and keeps) that instance
# file instead. PYTHON (default python) runs instances.py.
set -euo pipefail

REV=${1:-76aa775}
FILTER=${2:-_}
REPS=${3:-3}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(git -C "$HERE" rev-parse --show-toplevel)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

git -C "$ROOT" show "$REV:csrc/knapsack.h" > "$TMP/knapsack_orig.h"
INSTANCES=${KNAPSACK_INSTANCES:-$TMP/instances.txt}
if [ ! -s "$INSTANCES" ]; then
  "${PYTHON:-python}" "$HERE/instances.py" "$INSTANCES" --count 10
fi

CXXFLAGS=(-O3 -fno-trapping-math)
g++ "${CXXFLAGS[@]}" -DKNAPSACK_HEADER="\"$TMP/knapsack_orig.h\"" "$HERE/harness.cpp" \
  -o "$TMP/orig"
g++ "${CXXFLAGS[@]}" -DKNAPSACK_HEADER="\"$ROOT/csrc/knapsack.h\"" "$HERE/harness.cpp" \
  -o "$TMP/new"

uptime
# harness line: NAME mean MS max MS bad B sum S
paste <("$TMP/orig" "$INSTANCES" "$FILTER" "$REPS" | awk '{print $1, $3, $5, $9}') \
  <("$TMP/new" "$INSTANCES" "$FILTER" "$REPS" | awk '{print $3, $5, $7, $9}') |
  awk '{
    r = $2 / $5
    printf "%-38s orig %7.3f (%7.3f) new %7.3f (%7.3f) x%.2f bad %s %s\n",
      $1, $2, $3, $5, $6, r, $7, ($4 == $8 ? "same" : "DIFF")
  }'
