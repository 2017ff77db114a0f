"""The CSP learning curve (issue 19, item 4): FC and LDF trained on the labels of scenarios
0..N-1 for several N, all tested on the same test scenarios, as a table and a plot.

Every N uses the splits of the largest label set (a seeded draw per scenario index, so a scenario
keeps its split as labels are added): training takes the training scenarios below N, validation
and test are those of the whole set, identical for every N. Each N trains the FC for about
--fc-steps Adam steps (at least one epoch, selected by validation AR), then LDF from it for about
--ldf-steps (selected by the mu-loss), through csp_ldf.train, and evaluates both on the test
split: raw battery violations (min or capacity, % of slots) and the controllable-cost AR of the
raw, repaired and redispatched decodes. Each N's result is written when done, so the run resumes
where it stopped (training itself resumes from its last.pt).

    python bench/csp_learning_curve.py                                   # 250 500 1000 2000 all
    python bench/csp_learning_curve.py --sizes 250 500 --fc-steps 200 --ldf-steps 100
"""

import argparse
import json
import math
import os
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from csp_data import load_labels  # noqa: E402

import common  # noqa: E402
import csp_ldf as C  # noqa: E402

TEST_LABELS = 2000  # validation and test: the splits of scenarios 0..1999 (Tables 7-10's)
DECODES = ("raw", "repaired", "redispatched")
VIOLATION = "min or capacity"  # Table 7's battery family: % of slots violated
OUT = "bench/results/csp"


def size_list(texts):
    """ "250 500 all" -> [250, 500, None] (None: every label)."""
    sizes = []
    for text in texts:
        if text == "all":
            sizes.append(None)
            continue
        try:
            size = int(text)
        except ValueError:
            raise SystemExit(f"--sizes: expected numbers or 'all', got {text!r}") from None
        if size < 2:
            raise SystemExit(f"--sizes: {size} labels cannot train (at least 2)")
        sizes.append(size)
    return sizes


def restricted(ds, size):
    """ds with its training split cut to scenarios below `size` (None: all); validation and test
    cut to scenarios below TEST_LABELS, the same for every size."""
    index = ds["index"]
    split = ds["split"]
    train = split["train"] if size is None else split["train"][index[split["train"]] < size]
    if len(train) < 2:
        raise SystemExit(f"--sizes {size}: {len(train)} training scenarios (at least 2)")
    val = split["val"][index[split["val"]] < TEST_LABELS]
    test = split["test"][index[split["test"]] < TEST_LABELS]
    return {**ds, "split": dict(train=train, val=val, test=test)}


def epochs_for(steps, batch_size, n_train):
    """Epochs that make about `steps` Adam steps, at least one."""
    steps_per_epoch = max(1, math.ceil((n_train - 1) / batch_size))
    return max(1, round(steps / steps_per_epoch))


def train_pair(ds, size, args, folder):
    """FC, then LDF from it, on ds's training split -> {model: (checkpoint path, epochs,
    seconds)}."""
    n_train = len(ds["split"]["train"])
    trained = {}
    pretrained = []
    for model, steps in (("fc", args.fc_steps), ("ldf", args.ldf_steps)):
        epochs = epochs_for(steps, args.batch_size, n_train)
        run_dir = folder / f"{model}-{size or 'all'}"
        flags = [
            "--model", model, "--epochs", str(epochs), "--patience", str(epochs),
            "--batch-size", str(args.batch_size), "--threads", str(args.torch_threads),
            "--seed", str(args.seed), "--out", str(run_dir),
            *(pretrained or args.network.split()),
        ]  # fmt: skip
        started = time.perf_counter()
        selected = C.train(C.parse_args(flags), ds, run_dir)
        trained[model] = (selected, epochs, time.perf_counter() - started)
        pretrained = ["--pretrained", str(selected)]
    return trained


def curve_row(ds, size, trained):
    """The test split's figures of both networks at one size."""
    checkpoints = {model: path for model, (path, _, _) in trained.items()}
    results = C.evaluate(ds, checkpoints, decodes=DECODES)
    row = {"labels": size or "all", "n_train": int(len(ds["split"]["train"]))}
    for model, result in results.items():
        _, epochs, seconds = trained[model]
        row[model] = {
            "epochs": epochs,
            "train_s": seconds,
            "violated_pct": result["raw"]["fam"][VIOLATION]["pct_mean"],
            **{f"ar_{decode}": result[decode]["ar_controllable"] for decode in DECODES},
        }
    return row


def table(rows, n_test):
    lines = [
        f"CSP learning curve: {n_test} test scenarios (the same for every size)\n",
        "| labels | train scenarios | model | epochs | train s | raw battery violations "
        "(% of slots) | AR raw | AR repaired | AR redispatched |",
        "|" + "---|" * 9,
    ]
    for row in rows:
        for model in ("fc", "ldf"):
            r = row[model]
            lines.append(
                f"| {row['labels']} | {row['n_train']} | {model} | {r['epochs']} | "
                f"{r['train_s']:.0f} | {r['violated_pct']:.1f} | {r['ar_raw']:.3f} | "
                f"{r['ar_repaired']:.3f} | {r['ar_redispatched']:.3f} |"
            )
    lines.append(
        "\nAR: on the controllable cost (1 + mean $ above the label / mean |label - fixed|)."
    )
    return "\n".join(lines)


def figure(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_train = [row["n_train"] for row in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for model in ("fc", "ldf"):
        left.plot(n_train, [row[model]["violated_pct"] for row in rows], "o-", label=model)
        for decode in DECODES:
            values = [row[model][f"ar_{decode}"] for row in rows]
            right.plot(n_train, values, "o-", label=f"{model} {decode}")
    left.set_ylabel("raw battery violations, % of slots")
    right.set_ylabel("AR on the controllable cost")
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xlabel("training scenarios")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main():
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--sizes", nargs="+", default=["250", "500", "1000", "2000", "all"])
    p.add_argument("--fc-steps", type=int, default=600, help="Adam steps of each FC (default 600)")
    p.add_argument(
        "--ldf-steps", type=int, default=300, help="Adam steps of each LDF (default 300)"
    )
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--torch-threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--network",
        default="",
        help='the FC architecture flags of csp_ldf.py, e.g. "--head 8,8" (default: the thesis)',
    )
    p.add_argument("--runs", default="runs/csp-curve", help="run folders (checkpoints)")
    p.add_argument("--out", default=OUT, help=f"table, JSON and plot (default {OUT})")
    p.add_argument("--data-dir", help="challenge data (default: datasets/ieee_cis)")
    args = p.parse_args()
    sizes = size_list(args.sizes)
    C.torch.set_num_threads(args.torch_threads)

    ds = load_labels(None, seed=args.seed, data_dir=args.data_dir)
    runs = Path(args.runs)
    out = Path(args.out)
    done_path = runs / "curve.json"
    done = json.loads(done_path.read_text()) if done_path.exists() else {}
    print(f"{len(ds['index'])} labels; load average {os.getloadavg()}", flush=True)
    for size in sizes:
        key = str(size or "all")
        if key in done:
            continue
        part = restricted(ds, size)
        done[key] = curve_row(part, size, train_pair(part, size, args, runs))
        common.atomic_write_json(done_path, done)
    rows = [done[str(size or "all")] for size in sizes]
    n_test = len(restricted(ds, sizes[0])["split"]["test"])
    text = table(rows, n_test)
    text += f"\n\nMade by: python bench/csp_learning_curve.py {shlex.join(sys.argv[1:])}\n"
    text += f"Load average at the end: {os.getloadavg()}\n"
    common.atomic_write_bytes(out / "learning_curve.md", text.encode())
    common.atomic_write_json(out / "learning_curve.json", rows)
    figure(rows, out / "learning_curve.png")
    print(text)


if __name__ == "__main__":
    main()
