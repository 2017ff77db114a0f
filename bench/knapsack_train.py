"""Knapsack training speed: the float32 eager loop against the bfloat16-autocast path, side by side.

Both train the same model from the same seed for the same epochs on the same instances, through
knapsack_ldf.train (the shared LDF loop), and print seconds per epoch and the validation AR and
% violated after the last epoch: the speed-up must not cost accuracy (they should agree within the
noise of two training runs).

    python bench/knapsack_train.py --instances 10000 --epochs 5          # LDF, thesis settings
    python bench/knapsack_train.py --model fc --instances 30000 --epochs 3

Time on a quiet machine (`uptime`) and give the load with the figures.
"""

import argparse
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import common  # noqa: E402
import knapsack_ldf  # noqa: E402

PRECISIONS = ("fp32", "bf16")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", choices=["fc", "ldf"], default="ldf")
    p.add_argument("--items", type=int, default=500)
    p.add_argument("--instances", type=int, default=10000)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    p.add_argument("--data-dir", default="data")
    args = p.parse_args(argv)
    common.set_threads(args.threads)
    load = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for precision in PRECISIONS:
            flags = [
                "--model",
                args.model,
                "--items",
                str(args.items),
                "--instances",
                str(args.instances),
                "--epochs",
                str(args.epochs),
                "--precision",
                precision,
                "--data-dir",
                args.data_dir,
                "--out",
                os.path.join(tmp, precision),
                "--fresh",
            ]
            run_args = knapsack_ldf.parse_args(flags)
            data = knapsack_ldf.load_data(run_args)
            state, _ = knapsack_ldf.train(run_args, data, run_args.out)
            history = state["history"]
            seconds = np.diff([0.0] + [h["seconds"] for h in history])
            rows.append((precision, seconds, history[-1]))
    print(
        f"\n{args.model}, n={args.items}, {args.instances} instances "
        f"({int(0.8 * args.instances)} training), {args.epochs} epochs, "
        f"{common.torch.get_num_threads()} threads, load average {load:.2f} at the start\n"
    )
    print("| path | s/epoch (median) | s/epoch (first) | val AR | val % violated |")
    print("|---|---|---|---|---|")
    for precision, seconds, last in rows:
        print(
            f"| {precision} | {np.median(seconds):.2f} | {seconds[0]:.2f} | {last['val_ar']:.4f} | "
            f"{100 * last['val_violated']:.2f} |"
        )
    speedup = np.median(rows[0][1]) / np.median(rows[1][1])
    print(f"\nbf16 / fp32 speed-up (median epoch): {speedup:.2f}x")


if __name__ == "__main__":
    main()
