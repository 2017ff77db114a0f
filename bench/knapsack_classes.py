"""Pisinger's knapsack classes (issue 12) at n = 500: what exact solving costs, and where greedy
v/w is weak. Two Markdown tables, printed (and appended to --out):

    python bench/knapsack_classes.py solvers --out bench/knapsack_classes.md
    python bench/knapsack_classes.py greedy --ranges 10000 --out bench/knapsack_classes.md

solvers: per class and R, --instances instances (seed 0, alpha = W/sum(w) spread over (0, 1)),
solved one after another in this process by OR-Tools' branch and bound (knapsack_ldf's
solve_ortools) and by the core algorithm (solve_core), each with a per-instance --time-limit:
mean and largest ms per instance, and how many were not proven optimal in time. A solver that
fails on GIVE_UP instances of a class and R stops there and skips the larger R of that class.

greedy: per class and R, --instances instances with exact labels, made and cached under
--data-dir as `knapsack_ldf.py --labels-only` makes them (solver and time limit: its defaults):
greedy v/w's AR, AR - 1, % violated and ms per instance, beside the exact solver's ms per
instance; "weak" marks AR - 1 > 1e-3.

Timings share the machine with whatever else runs: the load average (`uptime`) is printed with
them.
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import knapsack_ldf as ks  # noqa: E402

ITEMS = 500
GIVE_UP = 3  # failures of one solver on one class and R before it stops there
WEAK_GREEDY = 1e-3  # AR - 1 above this: greedy is weak on the class
SOLVERS = {"OR-Tools branch and bound": ks.solve_ortools, "core algorithm": ks.solve_core}


def ranges_of(distribution, ranges):
    """similar-weights has fixed ranges: one row, whatever --ranges says."""
    return [ranges[0]] if distribution == "similar-weights" else ranges


def power_of_ten(value_range):
    exponent = len(str(value_range)) - 1
    return f"10^{exponent}" if value_range == 10**exponent else str(value_range)


def range_label(distribution, value_range):
    return "fixed" if distribution == "similar-weights" else power_of_ten(value_range)


def load_text():
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def time_solver(solve, w, v, capacity, time_limit):
    """ms per instance of each solved instance, and the number not proven within the limit
    (it stops after GIVE_UP of them)."""
    times, failed = [], 0
    for i in range(len(w)):
        started = time.perf_counter()
        try:
            solve(w[i], v[i], capacity[i], time_limit)
        except ks.LabelTimeout:
            failed += 1
            if failed == GIVE_UP:
                break
            continue
        times.append(1000 * (time.perf_counter() - started))
    return np.array(times), failed


def solver_cell(times, failed, tried, n_instances, time_limit):
    text = f"{times.mean():.1f} ({times.max():.0f})" if len(times) else "-"
    if failed:
        text += f"; {failed} of {tried} not proven in {time_limit:g} s"
        if tried < n_instances:
            text += ", stopped"
    return text


def solvers_table(args):
    lines = [f"Exact solvers at n = {ITEMS}: mean (largest) ms per instance over "]
    lines[0] += f"{args.instances} instances per class and R, limit {args.time_limit:g} s each"
    lines += [f"Started with {load_text()}.", ""]
    for name, solve in SOLVERS.items():
        lines += [f"{name}:", ""]
        columns = [f"R = {power_of_ten(value_range)}" for value_range in args.ranges]
        lines.append("| class | " + " | ".join(columns) + " |")
        lines.append("|---" * (len(columns) + 1) + "|")
        for distribution in args.classes:
            cells = []
            gave_up = False
            for value_range in args.ranges:
                if value_range not in ranges_of(distribution, args.ranges):
                    cells.append("(R unused)")
                    continue
                if gave_up or value_range < ks.MIN_RANGE.get(distribution, 0):
                    cells.append("skipped")
                    continue
                w, v, capacity = ks.make_instances(
                    ITEMS, args.instances, args.seed, value_range, distribution
                )
                times, failed = time_solver(solve, w, v, capacity, args.time_limit)
                tried = len(times) + failed
                cells.append(solver_cell(times, failed, tried, args.instances, args.time_limit))
                gave_up = failed >= GIVE_UP
                print(f"{name}, {distribution}, R={value_range}: {cells[-1]}", file=sys.stderr)
            lines.append(f"| {distribution} | " + " | ".join(cells) + " |")
        lines.append("")
    lines.append(f"Ended with {load_text()}.")
    return "\n".join(lines)


def greedy_table(args):
    lines = [
        f"Greedy v/w against the exact labels at n = {ITEMS}, {args.instances} instances per "
        "class and R (alpha spread over (0, 1))",
        f"Started with {load_text()}.",
        "",
        "| class | R | exact solver | exact ms per instance (largest) | greedy AR | AR - 1 "
        "| greedy % violated | greedy % optimal | greedy ms per instance | greedy weak |",
        "|---" * 10 + "|",
    ]
    for distribution in args.classes:
        for value_range in ranges_of(distribution, args.ranges):
            flags = ["--distribution", distribution, "--items", str(ITEMS), "--labels-only"]
            flags += ["--instances", str(args.instances), "--seed", str(args.seed)]
            flags += ["--data-dir", args.data_dir, "--workers", str(args.workers)]
            if distribution != "similar-weights":
                flags += ["--range", str(value_range)]
            data = ks.load_data(ks.parse_args(flags))
            row = ks.greedy_row(data)
            x = ks.greedy(data["w"], data["v"], data["capacity"])
            optimal = 100 * np.mean((x * data["v"]).sum(1) == data["opt"])
            exact_ms = 1000 * data["solve_seconds"]
            weak = "yes" if row["ar"] - 1 > WEAK_GREEDY else "no"
            lines.append(
                f"| {distribution} | {range_label(distribution, value_range)} | {data['solver']} "
                f"| {exact_ms.mean():.1f} ({exact_ms.max():.0f}) | {row['ar']:.5f} "
                f"| {row['ar'] - 1:.1e} | {row['pct_violated']:.1f} | {optimal:.1f} "
                f"| {row['ms_per_instance']:.3f} | {weak} |"
            )
            print(lines[-1], file=sys.stderr)
    lines += ["", f"Ended with {load_text()}."]
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("table", choices=["solvers", "greedy"])
    p.add_argument("--ranges", type=int, nargs="+", default=[10**3, 10**4, 10**5, 10**6, 10**7])
    p.add_argument("--classes", nargs="+", choices=ks.DISTRIBUTIONS, default=ks.DISTRIBUTIONS)
    p.add_argument("--instances", type=int, help="per class and R (solvers: 24, greedy: 300)")
    p.add_argument("--time-limit", type=float, default=10.0, help="solvers: seconds per instance")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default="data", help="greedy: where the labels are cached")
    p.add_argument("--workers", type=int, default=1, help="greedy: label worker processes")
    p.add_argument("--out", help="also append the table to this file")
    args = p.parse_args(argv)
    if args.instances is None:
        args.instances = 24 if args.table == "solvers" else 300
    command = "python bench/knapsack_classes.py " + " ".join(argv or sys.argv[1:])
    table = solvers_table(args) if args.table == "solvers" else greedy_table(args)
    text = f"`{command}`\n\n{table}\n"
    print(text)
    if args.out:
        appending = os.path.exists(args.out) and os.path.getsize(args.out) > 0
        with open(args.out, "a") as f:
            f.write(("\n" if appending else "") + text)


if __name__ == "__main__":
    main()
