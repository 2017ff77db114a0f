"""Knapsack training speed, side by side in one run.

--compare rev (default): the training code (knapsack_ldf.py and common.py) at git revision --rev,
"before", against the working tree, "after", and the working tree with --fused-adam (opt-in: not
bit-identical). --compare precision: the float32 eager loop against bfloat16 autocast.

Every path trains the same model from the same seed for the same epochs on the same instances
through knapsack_ldf.train (the shared LDF loop), each run in a fresh process, the paths taking
turns (before, after, fused, before, after, ...) for --rounds rounds, so that a change in the
machine's load falls on all of them. Per path: seconds per epoch from the loop's own clock
(training, validation and the multiplier pass; median over every epoch of every round, and the
first epoch's), the wall time of the whole train() call per epoch (checkpoint writes included),
the validation AR and % violated after the last epoch, and whether its history (every number but
the seconds) equals the first path's: a change of plumbing must leave the results bit-identical.

    python bench/knapsack_train.py --model fc --instances 30000 --epochs 3 --rev HEAD
    python bench/knapsack_train.py --compare precision --instances 10000 --epochs 5

Time on a quiet machine (`uptime`) and give the load with the figures (printed at start and end).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CODE_FILES = ("knapsack_ldf.py", "common.py")  # the training code a revision brings
RESULT_MARK = "KNAPSACK_TRAIN_RESULT "  # the worker's line of JSON on stdout
UNTIMED_KEYS = ("seconds",)  # history entries that may differ between identical runs


def worker(code_dir, flags):
    """Train once with the knapsack_ldf and common found in code_dir (csrc from the working
    tree); print the history and the wall time of train() as one JSON line."""
    sys.path[:0] = [code_dir, ROOT]
    import knapsack_ldf  # first: it sets OMP_WAIT_POLICY before torch loads OpenMP

    common = knapsack_ldf.common

    run_args = knapsack_ldf.parse_args(flags)
    common.set_threads(run_args.threads)
    data = knapsack_ldf.load_data(run_args)
    started = time.perf_counter()
    state, _ = knapsack_ldf.train(run_args, data, run_args.out)
    wall = time.perf_counter() - started
    result = {"history": state["history"], "wall": wall, "threads": common.torch.get_num_threads()}
    print(RESULT_MARK + json.dumps(result))


def run_path(code_dir, flags):
    command = [sys.executable, os.path.abspath(__file__), "--worker", code_dir, "--", *flags]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    line = next(x for x in done.stdout.splitlines() if x.startswith(RESULT_MARK))
    return json.loads(line[len(RESULT_MARK) :])


def checkout(rev, folder):
    """The training code of git revision `rev` into `folder`."""
    os.makedirs(folder)
    for name in CODE_FILES:
        text = subprocess.run(
            ["git", "-C", ROOT, "show", f"{rev}:{name}"], check=True, capture_output=True
        ).stdout
        with open(os.path.join(folder, name), "wb") as f:
            f.write(text)
    return folder


def untimed(history):
    return [{k: v for k, v in row.items() if k not in UNTIMED_KEYS} for row in history]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--compare", choices=["rev", "precision"], default="rev")
    p.add_argument("--rev", default="HEAD", help="the 'before' revision of --compare rev")
    p.add_argument("--model", choices=["fc", "ldf"], default="ldf")
    p.add_argument("--items", type=int, default=500)
    p.add_argument("--instances", type=int, default=10000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2, help="turns each path takes")
    p.add_argument("--precision", default="auto", help="--compare rev: every path's precision")
    p.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("flags", nargs="*", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.flags)
    load_start = os.getloadavg()
    tmp = tempfile.mkdtemp(prefix="knapsack_train_")
    try:
        if args.compare == "rev":
            before = checkout(args.rev, os.path.join(tmp, "before"))
            paths = [
                (f"before ({args.rev})", before, ["--precision", args.precision]),
                ("after (working tree)", ROOT, ["--precision", args.precision]),
                ("after, --fused-adam", ROOT, ["--precision", args.precision, "--fused-adam"]),
            ]
        else:
            paths = [(name, ROOT, ["--precision", name]) for name in ("fp32", "bf16")]
        common_flags = [
            *("--model", args.model, "--items", str(args.items)),
            *("--instances", str(args.instances), "--epochs", str(args.epochs)),
            *("--data-dir", os.path.abspath(args.data_dir), "--fresh"),
            *(["--threads", str(args.threads)] if args.threads else []),
        ]
        results = {name: [] for name, _, _ in paths}
        threads = None
        for turn in range(args.rounds):
            for index, (name, code_dir, flags) in enumerate(paths):
                out = os.path.join(tmp, f"out{index}_{turn}")
                result = run_path(code_dir, [*common_flags, *flags, "--out", out])
                results[name].append(result)
                threads = result["threads"]
                shutil.rmtree(out, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    load_end = os.getloadavg()
    print(
        f"\n{args.model}, n={args.items}, {args.instances} instances "
        f"({int(0.8 * args.instances)} training), {args.epochs} epochs x {args.rounds} rounds "
        f"per path, {threads} threads; load average {load_start[0]:.2f} at the start, "
        f"{load_end[0]:.2f} at the end\n"
    )
    print(
        "| path | s/epoch (median) | s/epoch (first) | wall s/epoch (train(), median) | "
        "speed-up | val AR | val % violated | history = first path's |"
    )
    print("|---|---|---|---|---|---|---|---|")
    first_name = paths[0][0]
    base = None
    for name, _, _ in paths:
        runs = results[name]
        epochs = np.concatenate(
            [np.diff([0.0] + [h["seconds"] for h in r["history"]]) for r in runs]
        )
        firsts = [r["history"][0]["seconds"] for r in runs]
        wall = np.median([r["wall"] / len(r["history"]) for r in runs])
        median = float(np.median(epochs))
        base = base or median
        last = runs[-1]["history"][-1]
        same = all(
            untimed(r["history"]) == untimed(results[first_name][0]["history"]) for r in runs
        )
        print(
            f"| {name} | {median:.2f} | {np.median(firsts):.2f} | {wall:.2f} | "
            f"{base / median:.2f}x | {last['val_ar']:.4f} | {100 * last['val_violated']:.2f} | "
            f"{'yes' if same else 'no'} |"
        )


if __name__ == "__main__":
    main()
