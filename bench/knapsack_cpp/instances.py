"""Instances for the C++ knapsack harness (harness.cpp, run by compare.sh): Pisinger's classes of
knapsack_ldf.make_instances at n = 500, seed 0, alpha = W/sum(w) spread over (0, 1), for
R = 10^3 .. 10^7 (similar-weights, which ignores R, only at 10^3; R under a class's MIN_RANGE
skipped). One text file:

    python bench/knapsack_cpp/instances.py /tmp/instances.txt --count 10

Per class and R, a header line "name n count" (name = class_R), then per instance three lines:
the capacity, the n weights, the n values (integers, space-separated).
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import knapsack_ldf as ks  # noqa: E402

ITEMS = 500
SEED = 0
RANGES = (10**3, 10**4, 10**5, 10**6, 10**7)
FIXED_RANGE_CLASSES = {"similar-weights": (10**3,)}  # classes whose data do not depend on R
COUNT = 10


def class_ranges(distribution):
    """The values of R timed for one class."""
    ranges = FIXED_RANGE_CLASSES.get(distribution, RANGES)
    return [r for r in ranges if r >= ks.MIN_RANGE.get(distribution, 0)]


def ints(row):
    return " ".join(str(int(x)) for x in row)


def write_instances(out, count):
    for distribution in ks.DISTRIBUTIONS:
        for value_range in class_ranges(distribution):
            w, v, c = ks.make_instances(ITEMS, count, SEED, value_range, distribution)
            out.write(f"{distribution}_{value_range} {w.shape[1]} {count}\n")
            for i in range(count):
                out.write(f"{int(np.floor(c[i]))}\n{ints(w[i])}\n{ints(v[i])}\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="path of the instance file to write")
    parser.add_argument("--count", type=int, default=COUNT, help="instances per class and R")
    args = parser.parse_args()
    with open(args.out, "w") as out:
        write_instances(out, args.count)


if __name__ == "__main__":
    main()
