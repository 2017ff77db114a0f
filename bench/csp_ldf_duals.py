"""The LDF's multipliers side by side on the CSP (issue 21, item 2): the thesis' scalar lambda_b
against per-instance multipliers, the augmented Lagrangian and a dual network, each trained with
`csp_ldf.py --pretrained <fc.pt> --dual <variant>` from the same FC checkpoint, on the same
labels, split and seed, and tested on the same scenarios, with the thesis' rows beside.

    python bench/csp_ldf_duals.py                         # fc.pt, 2,000 labels, 3 epochs each
    python bench/csp_ldf_duals.py --max-labels 1000 --epochs 3 --threads 2

Every scenario keeps its split as labels are added (a seeded draw per scenario index), so an FC
trained on the 2,000 labels has seen none of the validation or test scenarios of a smaller set.
Each variant is selected by the thesis' mu-loss and evaluated on the test split: raw battery
violations (Table 7's "min or capacity", % of slots), the controllable-cost AR of the
redispatched schedule (Table 9), and after improve within 100 ms (Table 10). Writes
<results>/ldf_duals.md, .json.gz (every variant's results and training history) and .png (the
multiplier trajectories, and validation violation against AR over the epochs).

Training resumes from each run folder's last.pt. Time on a quiet machine (`uptime`): the load is
printed with the table.
"""

import argparse
import gzip
import json
import os
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from csp_data import load_labels  # noqa: E402

import common  # noqa: E402
import csp_ldf as C  # noqa: E402

RESULTS = os.path.join("bench", "results", "csp")
RUNS = os.path.join("runs", "csp_ldf_duals")
DEFAULT_LABELS = 2000  # Tables 7-10's labels
DUAL_EPOCHS = 3
BATCH_SIZE = 8  # as ldf.pt of Tables 7-10
BATTERY = "min or capacity"  # Table 7's battery family
GOAL_BATTERY_PCT = 2.0  # issue 21: raw battery violations <= 2 % of slots ...
GOAL_DECODE = "redispatched"  # ... with this decode's controllable AR no worse than FC's
DECODES = ("raw", "redispatched", "improved-100ms")
SECONDS_PER_MINUTE = 60.0


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--pretrained", default="fc.pt", help="the FC checkpoint every variant starts from"
    )
    p.add_argument("--max-labels", type=common.positive_int, default=DEFAULT_LABELS)
    p.add_argument("--epochs", type=common.positive_int, default=DUAL_EPOCHS)
    p.add_argument("--batch-size", type=common.positive_int, default=BATCH_SIZE)
    p.add_argument(
        "--duals", nargs="+", choices=common.DUALS, default=list(common.DUALS), help="variants"
    )
    p.add_argument("--threads", type=common.nonnegative_int, default=0, help="0: every core")
    p.add_argument("--seed", type=common.nonnegative_int, default=0)
    p.add_argument("--runs", default=RUNS, help="training folders")
    p.add_argument("--results", default=RESULTS, help="where ldf_duals.md/.json.gz/.png go")
    p.add_argument("--fresh", action="store_true", help="retrain instead of resuming")
    p.add_argument(
        "--plot-only", action="store_true", help="redraw the .png from the .json.gz, then stop"
    )
    return p.parse_args(argv)


def variant_flags(args, dual):
    out = os.path.join(args.runs, dual)
    flags = ["--pretrained", args.pretrained, "--dual", dual, "--epochs", str(args.epochs)]
    flags += ["--batch-size", str(args.batch_size), "--max-labels", str(args.max_labels)]
    flags += ["--threads", str(args.threads), "--seed", str(args.seed)]
    flags += ["--out", out, "--save", os.path.join(out, "ldf.pt")]
    return flags + (["--fresh"] if args.fresh else [])


def train_one(flags, ds):
    """One `csp_ldf.py` training run in this process -> (its test results, its history, the
    selected epoch's training seconds, its command line)."""
    args = C.parse_args(flags)
    results = C.run(args, ds)["ldf"]
    state = common.load_checkpoint(Path(args.out) / "last.pt", "run checkpoint")["state"]
    _, selected_epoch, seconds = state["best"][f"mu{args.mu:g}"]
    results["selected_epoch"] = selected_epoch
    return results, state["history"], seconds, "python csp_ldf.py " + shlex.join(flags)


def row_of(name, result, epochs, minutes, command):
    row = {"name": name, "battery_pct": result["raw"]["fam"][BATTERY]["pct_mean"]}
    for decode in DECODES:
        row[f"ar_{decode}"] = result[decode]["ar_controllable"]
    row.update(epochs=epochs, minutes=minutes, command=command)
    return row


def thesis_rows():
    """Table 7-9's thesis figures: % of slots violated and the AR of the whole cost (raw)."""
    return [
        {"name": f"thesis {name.upper()}", "battery_pct": pct, "thesis_ar": ar}
        for name, (pct, ar) in C.THESIS.items()
    ]


def cell(value, digits):
    return "—" if value is None else f"{value:.{digits}f}"


def markdown(rows, header):
    fc_ar = rows[0][f"ar_{GOAL_DECODE}"]
    lines = [
        header,
        "",
        "| variant | battery % of slots violated (raw) | controllable AR: raw | redispatched | "
        f"improved, 100 ms | epochs to selected | minutes to selected | goal ≤ "
        f"{GOAL_BATTERY_PCT:g} % at a redispatched AR ≤ FC's | command |",
        "|---" * 9 + "|",
    ]
    for row in rows:
        if "thesis_ar" in row:
            lines.append(
                f"| {row['name']} | {row['battery_pct']:.1f} | (AR of the whole cost "
                f"{row['thesis_ar']}) | | | | | | thesis |"
            )
            continue
        met = ""
        if row["name"] != "FC":
            within = row["battery_pct"] <= GOAL_BATTERY_PCT
            met = "met" if within and row[f"ar_{GOAL_DECODE}"] <= fc_ar else "no"
        ars = " | ".join(cell(row[f"ar_{decode}"], 3) for decode in DECODES)
        lines.append(
            f"| {row['name']} | {row['battery_pct']:.1f} | {ars} | {row['epochs']} | "
            f"{cell(row['minutes'], 1)} | {met} | `{row['command']}` |"
        )
    return "\n".join(lines)


def plot(histories, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_lambda, ax_trade) = plt.subplots(1, 2, figsize=(12, 4.5))
    for dual, history in histories.items():
        epochs = [h["epoch"] for h in history]
        multipliers = [h["multiplier"] for h in history]
        (line,) = ax_lambda.plot(epochs, multipliers, marker="o", label=f"{dual} mean")
        if "multiplier_p90" in history[0]:
            ax_lambda.fill_between(
                epochs,
                [h["multiplier_median"] for h in history],
                [h["multiplier_p90"] for h in history],
                color=line.get_color(),
                alpha=0.2,
                label=f"{dual} median-p90",
            )
        ax_trade.plot(
            [h["val_nu_b"] for h in history],
            [h["val_ar"] for h in history],
            marker="o",
            markersize=3,
            color=line.get_color(),
            label=dual,
        )
    ax_lambda.set(xlabel="epoch (after FC)", ylabel="lambda_b over the training scenarios")
    ax_lambda.set_yscale("symlog", linthresh=1e-3)
    ax_lambda.legend(fontsize=7)
    ax_trade.set(
        xlabel="validation battery violation nu_b (kWh, mean)",
        ylabel="validation AR (raw, whole cost)",
        title="trade-off over the checkpoints (one point an epoch)",
    )
    ax_trade.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    stem = os.path.join(args.results, "ldf_duals")
    if args.plot_only:
        with gzip.open(stem + ".json.gz") as f:
            plot(json.load(f)["histories"], stem + ".png")
        print(f"wrote {stem}.png")
        return
    common.set_threads(args.threads or None)
    load_before = os.getloadavg()
    started = time.perf_counter()
    ds = load_labels(args.max_labels, args.seed)
    fc = C.evaluate(ds, {"fc": args.pretrained}, decodes=DECODES)["fc"]
    fc_command = f"python csp_ldf.py --mode evaluate --checkpoints fc={args.pretrained}"
    rows = [row_of("FC", fc, fc["epoch"], None, fc_command)]
    results, histories = {"fc": fc}, {}
    for dual in args.duals:
        result, history, seconds, command = train_one(variant_flags(args, dual), ds)
        results[dual], histories[dual] = result, history
        minutes = seconds / SECONDS_PER_MINUTE
        rows.append(row_of(f"LDF {dual}", result, result["selected_epoch"], minutes, command))
    rows += thesis_rows()
    wall = time.perf_counter() - started
    load_after = os.getloadavg()
    n_train, n_test = len(ds["split"]["train"]), len(ds["split"]["test"])
    header = (
        f"CSP small_0, {n_train} training / {n_test} test scenarios (the first {args.max_labels} "
        f"labels), every variant from {args.pretrained} (FC, selected epoch {fc['epoch']}), then "
        f"{args.epochs} epochs at batch {args.batch_size}, selected by the mu-loss; 'epochs' and "
        f"'minutes' count the LDF part. Bench wall time {wall / SECONDS_PER_MINUTE:.1f} min, load "
        f"average {load_before[0]:.2f} at the start and {load_after[0]:.2f} at the end "
        f"(`uptime`), {common.torch.get_num_threads()} torch threads."
    )
    md = markdown(rows, header)
    print("\n" + md)
    os.makedirs(args.results, exist_ok=True)
    common.atomic_write_bytes(stem + ".md", (md + "\n").encode())
    record = {
        "rows": rows,
        "results": results,
        "histories": histories,
        "settings": vars(args),
        "wall_seconds": wall,
        "load_average": {"start": load_before, "end": load_after},
    }
    text = json.dumps(record, default=common._jsonable).encode()
    common.atomic_write_bytes(stem + ".json.gz", gzip.compress(text, mtime=0))
    plot(histories, stem + ".png")
    print(f"\nwrote {stem}.md, .json.gz and .png")


if __name__ == "__main__":
    main()
