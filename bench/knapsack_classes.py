"""Pisinger's knapsack classes (issue 12) at n = 500: what exact solving costs, and where greedy
v/w is weak. Two Markdown tables, printed (and appended to --out):

    python bench/knapsack_classes.py solvers --out bench/knapsack_classes.md
    python bench/knapsack_classes.py greedy --ranges 10000 --out bench/knapsack_classes.md
    python bench/knapsack_classes.py networks --ranges 1000000 --out bench/knapsack_classes.md
    python bench/knapsack_classes.py transfer --ranges 1000000 --out bench/knapsack_classes.md
    python bench/knapsack_classes.py exact --ranges 1000000 --out bench/knapsack_classes.md

solvers: per class and R, --instances instances (seed 0, alpha = W/sum(w) spread over (0, 1)),
solved one after another in this process by OR-Tools' branch and bound (knapsack_ldf's
solve_ortools) and by the core algorithm (solve_core), each with a per-instance --time-limit:
mean and largest ms per instance, and how many were not proven optimal in time. A solver that
fails on GIVE_UP instances of a class and R stops there and skips the larger R of that class.

greedy: per class and R, --instances instances with exact labels, made and cached under
--data-dir as `knapsack_ldf.py --labels-only` makes them (solver and time limit: its defaults):
greedy v/w's AR, AR - 1, % violated and ms per instance, beside the exact solver's ms per
instance; "weak" marks AR - 1 > 1e-3.

networks: per class at the first of --ranges, the thesis' FC (`--model fc`, --fc-epochs) and the
LDF set model (`--arch set`, --set-epochs) trained by knapsack_ldf.py on --instances instances
(80/10/10; runs under --runs), and their test split: AR and % violated raw, repaired and repaired +
swaps (knapsack_ldf.improve_by_swaps), beside greedy and greedy + swaps, with ms per instance (the
networks batched, decoders included) and the exact solver's (--exact-solver, default the C++
solver "combo", whatever solver made the cached labels). Every row is evaluated and timed again
in this process after the training: the exact solver re-solves the test split one instance at a
time, so no time comes from training runs or parallel label workers. "goal" checks issue 12 on
the classes where greedy is weak: a decode at 0 % violated with at most half of greedy's AR - 1, at
least 10x faster than the exact solver.

exact: the networks table's "exact ms" column alone, side by side: per class at the first of
--ranges, the test split of the networks table's instances (labels made or found under
--data-dir; no network is trained), the first --timed of them re-solved one after another in
this process by each of --exact-solvers (default the C++ solver and solve_core): mean (largest)
ms per instance (--clock: wall clock or CPU time of this thread), and solve_core's time over the
C++ solver's.

transfer: the set model the networks table trained on --train-class, evaluated without
retraining on fresh instances (--instances // 3, seed + 7) of every class at n = 100, 500 and 1000:
AR raw, repaired and repaired + swaps, beside greedy and greedy + swaps.

Timings share the machine with whatever else runs: the load average (`uptime`) is printed with
them.
"""

import argparse
import os
import sys
import time

import numpy as np
import torch

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


CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}


def time_solver(solve, w, v, capacity, time_limit, clock=time.perf_counter):
    """ms per instance of each solved instance, and the number not proven within the limit
    (it stops after GIVE_UP of them)."""
    times, failed = [], 0
    for i in range(len(w)):
        started = clock()
        try:
            solve(w[i], v[i], capacity[i], time_limit)
        except ks.LabelTimeout:
            failed += 1
            if failed == GIVE_UP:
                break
            continue
        times.append(1000 * (clock() - started))
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


def class_flags(args, distribution, value_range, items=ITEMS, instances=None, seed=None):
    flags = ["--distribution", distribution, "--items", str(items)]
    flags += ["--instances", str(instances or args.instances), "--seed", str(seed or args.seed)]
    flags += ["--data-dir", args.data_dir, "--workers", str(args.workers)]
    if distribution != "similar-weights":
        flags += ["--range", str(value_range)]
    return flags


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
            flags = class_flags(args, distribution, value_range) + ["--labels-only"]
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


NETWORKS = {  # name -> knapsack_ldf.py flags (the README's settings for each)
    "fc": ["--model", "fc"],
    "set": ["--arch", "set", "--lr", "1e-3", "--violation", "relative", "--step", "1e-3"]
    + ["--max-grad-norm", "1"],
}
CHECKPOINTS = {"fc": "fc.pt", "set": "ldf.pt"}  # what knapsack_ldf.py selects and saves per model
SPEED_GOAL = 10  # issue 12: at least this many times faster than the exact solver
TRANSFER_ITEMS = (100, 500, 1000)


def trained(args, distribution, value_range, network):
    """Train (or find trained) one network on one class -> the path of its selected checkpoint."""
    out = os.path.join(args.runs, f"{distribution}_R{value_range}", network)
    if not os.path.exists(os.path.join(out, "results.json")):  # written last by a finished run
        epochs = args.fc_epochs if network == "fc" else args.set_epochs
        flags = class_flags(args, distribution, value_range) + NETWORKS[network]
        ks.main(flags + ["--epochs", str(epochs), "--decode", "swap", "--out", out])
    return os.path.join(out, CHECKPOINTS[network])


LABEL_SOLVERS = {"ortools": ks.solve_ortools, "core": ks.solve_core, "combo": ks.solve_combo}


def timed_afresh(args, distribution, value_range, checkpoints):
    """One class's test split evaluated and timed again in this process, after any training:
    the exact solver one instance after another (the labels' own times were taken by parallel
    workers, maybe beside other work), then the decodes of each network in `checkpoints` (name ->
    path) -> (exact ms, results)."""
    label_args = ks.parse_args(class_flags(args, distribution, value_range) + ["--labels-only"])
    data = ks.load_data(label_args)
    rows = data["split"]["test"]
    solve = LABEL_SOLVERS[args.exact_solver]
    w, v, capacity = data["w"][rows], data["v"][rows], data["capacity"][rows]
    times, failed = time_solver(solve, w, v, capacity, label_args.time_limit)
    if failed:
        raise SystemExit(f"{distribution}: the exact solver ({args.exact_solver}) failed")
    results = {}
    for network, path in checkpoints.items():
        model, checkpoint = ks.load_model(path)
        bf16 = ks.use_bf16(checkpoint["config"].get("precision", "auto"), torch.device("cpu"))
        results[network] = ks.evaluate_tables(model, checkpoint, data, rows, bf16)
    return float(times.mean()), results


def goal_met(row, greedy_gap, exact_ms):
    """Issue 12's goal for one decode: 0 % violated, AR - 1 at most half greedy's, 10x faster."""
    return (
        row["pct_violated"] == 0
        and row["ar"] - 1 <= greedy_gap / 2
        and row["ms"] * SPEED_GOAL <= exact_ms
    )


def networks_table(args):
    value_range = args.ranges[0]
    lines = [
        f"Networks per class at n = {ITEMS}, R = {power_of_ten(value_range)}: {args.instances} "
        f"instances split 80/10/10, the test split's; FC {args.fc_epochs} epochs, set model "
        f"{args.set_epochs} epochs; AR (% violated) and ms per instance",
        f"Started with {load_text()}.",
        "",
        "| class | exact ms | greedy | greedy + swaps | FC raw | FC repaired | FC + swaps "
        "| set raw | set repaired | set + swaps | goal (greedy weak only) |",
        "|---" * 11 + "|",
    ]
    for distribution in args.classes:
        checkpoints = {net: trained(args, distribution, value_range, net) for net in NETWORKS}
        exact_ms, results = timed_afresh(args, distribution, value_range, checkpoints)
        times = results["set"]["times"]
        decodes = {
            "greedy": (results["set"]["greedy"], times["greedy_ms_per_instance"]),
            "greedy + swaps": (
                results["set"]["greedy_swap"],
                times["greedy_swap_ms_per_instance"],
            ),
        }
        for net, result in results.items():
            net_times = result["times"]
            decodes[f"{net} raw"] = (result["test_raw"], net_times["network_ms_per_instance"])
            decodes[f"{net} repaired"] = (
                result["test_repair"],
                net_times["repair_ms_per_instance"],
            )
            decodes[f"{net} + swaps"] = (result["test_swap"], net_times["swap_ms_per_instance"])
        rows = {name: dict(table["all"], ms=ms) for name, (table, ms) in decodes.items()}
        cells = [
            f"{row['ar']:.5f} ({row['pct_violated']:.1f}) {row['ms']:.2f}" for row in rows.values()
        ]
        greedy_gap = rows["greedy"]["ar"] - 1
        if greedy_gap > WEAK_GREEDY:
            networks = [name for name in rows if not name.startswith("greedy")]
            met = [name for name in networks if goal_met(rows[name], greedy_gap, exact_ms)]
            goal = "met by " + ", ".join(met) if met else "not met"
            if goal_met(rows["greedy + swaps"], greedy_gap, exact_ms):
                goal += " (greedy + swaps meets it too)"
        else:
            goal = "(greedy not weak)"
        lines.append(f"| {distribution} | {exact_ms:.1f} | " + " | ".join(cells) + f" | {goal} |")
        print(lines[-1], file=sys.stderr)
    lines += ["", f"Ended with {load_text()}."]
    return "\n".join(lines)


def exact_table(args):
    """The networks table's exact column alone: its test split re-solved by each solver in turn."""
    value_range = args.ranges[0]
    solvers = args.exact_solvers
    lines = [
        f"Exact solvers on the networks table's test split at n = {ITEMS}, R = "
        f"{power_of_ten(value_range)} ({args.instances} instances split 80/10/10; the first "
        f"{args.timed or 'all'} test instances), one after another, one core: mean (largest) ms "
        f"per instance ({args.clock} time)",
        f"Started with {load_text()}.",
        "",
        "| class | instances | "
        + " | ".join(f"{name} ms" for name in solvers)
        + (" | core / combo |" if {"core", "combo"} <= set(solvers) else " |"),
        "|---" * (2 + len(solvers) + ({"core", "combo"} <= set(solvers))) + "|",
    ]
    torch.set_num_threads(1)
    for distribution in args.classes:
        flags = class_flags(args, distribution, value_range) + ["--labels-only"]
        label_args = ks.parse_args(flags)
        data = ks.load_data(label_args)
        rows = data["split"]["test"][: args.timed or None]
        w, v, capacity = data["w"][rows], data["v"][rows], data["capacity"][rows]
        means, cells = {}, []
        for name in solvers:
            LABEL_SOLVERS[name](w[0], v[0], capacity[0], None)  # a warm-up, not timed
            times, failed = time_solver(
                LABEL_SOLVERS[name], w, v, capacity, label_args.time_limit, CLOCKS[args.clock]
            )
            if failed:
                raise SystemExit(f"{distribution}: {name} did not prove {failed} instances")
            means[name] = times.mean()
            cells.append(f"{times.mean():.3f} ({times.max():.2f})")
        if {"core", "combo"} <= set(solvers):
            cells.append(f"{means['core'] / means['combo']:.0f}x")
        lines.append(f"| {distribution} | {len(rows)} | " + " | ".join(cells) + " |")
        print(lines[-1], file=sys.stderr)
    lines += ["", f"Ended with {load_text()}."]
    return "\n".join(lines)


def transfer_table(args):
    """The set model of one class and n = 500 on other classes and sizes, without retraining."""
    value_range = args.ranges[0]
    checkpoint_path = trained(args, args.train_class, value_range, "set")
    model, checkpoint = ks.load_model(checkpoint_path)
    n_fresh = args.instances // 3
    lines = [
        f"Transfer: the set model trained on {args.train_class}, n = {ITEMS}, R = "
        f"{power_of_ten(value_range)} ({checkpoint_path}), on {n_fresh} fresh instances (seed "
        f"{args.seed + ks.EVAL_SEED_OFFSET}) per class and n, no retraining; AR (% violated)",
        f"Started with {load_text()}.",
        "",
        "| class | n | set raw | set repaired | set + swaps | greedy | greedy + swaps |",
        "|---" * 7 + "|",
    ]
    for distribution in args.classes:
        for items in TRANSFER_ITEMS:
            flags = class_flags(
                args, distribution, value_range, items, n_fresh, args.seed + ks.EVAL_SEED_OFFSET
            )
            data = ks.load_data(ks.parse_args(flags + ["--labels-only"]))
            every = np.arange(len(data["w"]))
            result = ks.evaluate_tables(model, checkpoint, data, every)
            keys = ("test_raw", "test_repair", "test_swap", "greedy", "greedy_swap")
            cells = [
                f"{result[key]['all']['ar']:.5f} ({result[key]['all']['pct_violated']:.1f})"
                for key in keys
            ]
            lines.append(f"| {distribution} | {items} | " + " | ".join(cells) + " |")
            print(lines[-1], file=sys.stderr)
    lines += ["", f"Ended with {load_text()}."]
    return "\n".join(lines)


TABLES = {
    "solvers": solvers_table,
    "greedy": greedy_table,
    "networks": networks_table,
    "transfer": transfer_table,
    "exact": exact_table,
}
DEFAULT_INSTANCES = {
    "solvers": 24,
    "greedy": 300,
    "networks": 5000,
    "transfer": 5000,
    "exact": 5000,
}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("table", choices=list(TABLES))
    p.add_argument("--ranges", type=int, nargs="+", default=[10**3, 10**4, 10**5, 10**6, 10**7])
    p.add_argument("--classes", nargs="+", choices=ks.DISTRIBUTIONS, default=ks.DISTRIBUTIONS)
    p.add_argument("--instances", type=int, help=f"per class and R (default {DEFAULT_INSTANCES})")
    p.add_argument("--time-limit", type=float, default=10.0, help="solvers: seconds per instance")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default="data", help="where instances and labels are cached")
    p.add_argument("--workers", type=int, default=1, help="label worker processes")
    p.add_argument("--out", help="also append the table to this file")
    p.add_argument("--runs", default="runs/knapsack/classes", help="networks: run folders")
    p.add_argument("--fc-epochs", type=int, default=30)
    p.add_argument("--set-epochs", type=int, default=10)
    p.add_argument("--train-class", default="strongly-correlated", choices=ks.DISTRIBUTIONS)
    p.add_argument(
        "--exact-solver",
        default="combo",
        choices=list(LABEL_SOLVERS),
        help="networks: the solver of the exact ms column",
    )
    p.add_argument(
        "--exact-solvers",
        nargs="+",
        default=["combo", "core"],
        choices=list(LABEL_SOLVERS),
        help="exact: the solvers timed side by side",
    )
    p.add_argument("--timed", type=int, default=0, help="exact: test instances timed (0: all)")
    p.add_argument(
        "--clock",
        choices=list(CLOCKS),
        default="wall",
        help="exact: wall clock, or CPU time of this thread (leaves out waiting for a core)",
    )
    args = p.parse_args(argv)
    if args.instances is None:
        args.instances = DEFAULT_INSTANCES[args.table]
    command = "python bench/knapsack_classes.py " + " ".join(argv or sys.argv[1:])
    table = TABLES[args.table](args)
    text = f"`{command}`\n\n{table}\n"
    print(text)
    if args.out:
        appending = os.path.exists(args.out) and os.path.getsize(args.out) > 0
        with open(args.out, "a") as f:
            f.write(("\n" if appending else "") + text)


if __name__ == "__main__":
    main()
