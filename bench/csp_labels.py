"""Seconds per CSP label (one core): the labelling path of today (restricted MIP on the
reduced-cost candidates, csp_ldf.CANDIDATE_COLUMNS) against the path before it (restricted MIP on
every recurring and every profitable start, "pays"), on the same price scenarios, same warm start,
same --gap, each timed while the other waits. Prints per scenario and the means: seconds, proven gap
on the total cost and the objective difference.

    python bench/csp_labels.py                       # 8 scenarios of small_0 (1000..1007), 1 thread
    python bench/csp_labels.py --scenarios 16 --first 2000

Time it on a quiet machine: the load average is printed with the figures.
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import csp_ldf as C  # noqa: E402

PATHS = ("pays", "reduced-cost")  # before, today


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--instance", default="phase2_instance_small_0")
    p.add_argument("--scenarios", type=int, default=8)
    p.add_argument(
        "--first", type=int, default=1000, help="first scenario index (seed 0, day blocks)"
    )
    p.add_argument("--gap", type=float, default=0.01)
    args = p.parse_args()

    data = C.find_data_dir(None)
    price = C.read_price(data)
    inst = C.read_instance(data / "instances" / f"{args.instance}.txt")
    base, solar = C.read_loads(data, "forecast")
    mips = {path: C.build_mip(inst, base, solar) for path in PATHS}  # a HiGHS model each
    reference = C.solve(mips["reduced-cost"], price, gap=args.gap)  # the warm start of every label
    parts = C.stl_parts(price)
    print(f"load average before: {os.getloadavg()[0]:.2f} (2 cores); {args.instance}")
    seconds = {path: [] for path in PATHS}
    gaps = {path: [] for path in PATHS}
    objectives = {path: [] for path in PATHS}
    for i in range(args.first, args.first + args.scenarios):
        scenario, _ = C.price_scenario(parts, C.DAY, 0, i)
        row = f"scenario {i}:"
        for path in PATHS:
            t0 = time.perf_counter()
            label = C.solve_highs(
                mips[path], scenario, gap=args.gap, start=reference, restrict=path
            )
            seconds[path].append(time.perf_counter() - t0)
            gaps[path].append(label["gap"])
            objectives[path].append(label["objective"])
            row += f"  {path} {seconds[path][-1]:5.1f} s gap {100 * label['gap']:.3f} %"
        print(row, flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print("| path | mean s / label | median s | mean proven gap | max proven gap |")
    print("|---|---|---|---|---|")
    for path in PATHS:
        print(
            f"| {path} | {np.mean(seconds[path]):.2f} | {np.median(seconds[path]):.2f} | "
            f"{100 * np.mean(gaps[path]):.3f} % | {100 * np.max(gaps[path]):.3f} % |"
        )
    ratio = np.mean(seconds["pays"]) / np.mean(seconds["reduced-cost"])
    difference = np.mean(np.subtract(objectives["reduced-cost"], objectives["pays"]))
    print(f"speed-up {ratio:.2f}x; objective today - before: {difference:+.2f} $ mean")


if __name__ == "__main__":
    main()
