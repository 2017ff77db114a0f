"""Seconds per CSP label (one core): the labelling path (LP, then the restricted MIP on the
csp_ldf.CANDIDATE_COLUMNS start columns of lowest reduced cost, then the full MIP if needed) with
its candidate count against others, on the same price scenarios, same warm start, same --gap, each
timed while the others wait. Prints per scenario and the means: seconds, proven gap on the total
cost and the objective difference against the labelling path's own count.

    python bench/csp_labels.py                       # 8 scenarios of small_0 (1000..1007), 1 thread
    python bench/csp_labels.py --scenarios 16 --first 2000 --candidates 3000 6000 12000

Time it on a quiet machine: the load average is printed with the figures.
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import csp_ldf as C  # noqa: E402

CANDIDATES = (3000, 6000, 12000)  # start columns of the restricted MIP; 6000: the labels'


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--instance", default="phase2_instance_small_0")
    p.add_argument("--scenarios", type=int, default=8)
    p.add_argument(
        "--first", type=int, default=1000, help="first scenario index (seed 0, day blocks)"
    )
    p.add_argument("--gap", type=float, default=0.01)
    p.add_argument(
        "--candidates",
        type=int,
        nargs="+",
        default=list(CANDIDATES),
        help=f"candidate counts to compare (default {' '.join(map(str, CANDIDATES))})",
    )
    args = p.parse_args()
    paths = list(dict.fromkeys([C.CANDIDATE_COLUMNS, *args.candidates]))  # the labels' first
    labelling = C.CANDIDATE_COLUMNS

    data = C.find_data_dir(None)
    price = C.read_price(data)
    inst = C.read_instance(data / "instances" / f"{args.instance}.txt")
    base, solar = C.read_loads(data, "forecast")
    mips = {path: C.build_mip(inst, base, solar) for path in paths}  # a HiGHS model each
    reference = C.solve(mips[labelling], price, gap=args.gap)  # the warm start of every label
    parts = C.stl_parts(price)
    print(f"load average before: {os.getloadavg()[0]:.2f} (2 cores); {args.instance}")
    seconds = {path: [] for path in paths}
    gaps = {path: [] for path in paths}
    objectives = {path: [] for path in paths}
    for i in range(args.first, args.first + args.scenarios):
        scenario, _ = C.price_scenario(parts, C.DAY, 0, i)
        row = f"scenario {i}:"
        for path in paths:
            C.CANDIDATE_COLUMNS = path  # (read by restricted_columns at each solve)
            t0 = time.perf_counter()
            label = C.solve_highs(mips[path], scenario, gap=args.gap, start=reference)
            seconds[path].append(time.perf_counter() - t0)
            gaps[path].append(label["gap"])
            objectives[path].append(label["objective"])
            row += f"  {path}: {seconds[path][-1]:5.1f} s gap {100 * label['gap']:.3f} %"
        print(row, flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    C.CANDIDATE_COLUMNS = labelling
    print(
        "| candidate columns | mean s / label | median s | mean proven gap | max proven gap | "
        f"s / label against {labelling} | objective - {labelling}'s, mean $ |"
    )
    print("|---|---|---|---|---|---|---|")
    for path in paths:
        ratio = np.mean(seconds[path]) / np.mean(seconds[labelling])
        difference = np.mean(np.subtract(objectives[path], objectives[labelling]))
        print(
            f"| {path} | {np.mean(seconds[path]):.2f} | {np.median(seconds[path]):.2f} | "
            f"{100 * np.mean(gaps[path]):.3f} % | {100 * np.max(gaps[path]):.3f} % | "
            f"{ratio:.2f}x | {difference:+.2f} |"
        )


if __name__ == "__main__":
    main()
