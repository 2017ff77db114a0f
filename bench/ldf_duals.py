"""The LDF's multipliers side by side on the knapsack (issue 21): the thesis' scalar lambda against
per-instance multipliers, the augmented Lagrangian and a dual network, on the same instances,
split, seed and starting weights, with the thesis' rows beside.

    python bench/ldf_duals.py                                   # FC network (about 15 min here)
    python bench/ldf_duals.py --arch set --fc-epochs 2 --epochs 3     # the set model

Every variant starts from the same FC (BCE) pre-training (the thesis' pre-trained LDF, Table 4),
then trains with `knapsack_ldf.py --pretrained <fc.pt> --dual <variant>` for --epochs epochs,
selected by the thesis' 1-loss (--select-mu). Writes <results>/ldf_duals.md (the table, each row
with its command), .json.gz (every run's results.json, history included) and .png (each variant's
multiplier trajectory, and validation % violated against AR over the epochs' checkpoints).

Time on a machine as quiet as you can get (`uptime`): the load is printed with the table.
"""

import argparse
import gzip
import json
import os
import shlex
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import common  # noqa: E402
import knapsack_ldf  # noqa: E402

RESULTS = os.path.join("bench", "results", "knapsack")
RUNS = os.path.join("runs", "ldf_duals")
DEFAULT_INSTANCES = 10000  # a third of the thesis' 30,000 (same generator, n, split): ~25 min
FC_EPOCHS = 15
DUAL_EPOCHS = 8
PRETRAINED = knapsack_ldf.THESIS_SETTINGS["ldf-pretrained"]  # the thesis' pre-trained LDF
GOAL_VIOLATED = {"fc": 1.0, "set": 0.5}  # issue 21: % of test instances violated ...
GOAL_AR = {"fc": 1.10, "set": 1.01}  # ... at this raw AR or lower
THESIS_LDF_MINUTES = knapsack_ldf.THESIS_TRAINING["ldf"][1]
SECONDS_PER_MINUTE = 60.0
PERCENT = 100.0


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--arch", choices=["fc", "set"], default="fc")
    p.add_argument("--instances", type=common.positive_int, default=DEFAULT_INSTANCES)
    p.add_argument("--fc-epochs", type=common.positive_int, default=FC_EPOCHS)
    p.add_argument("--epochs", type=common.positive_int, default=DUAL_EPOCHS)
    p.add_argument("--lr", type=common.positive_float, default=PRETRAINED["lr"])
    p.add_argument(
        "--max-grad-norm", type=common.nonnegative_float, default=PRETRAINED["max_grad_norm"]
    )
    p.add_argument("--lambda0", type=common.nonnegative_float, default=1.0)
    p.add_argument(
        "--duals", nargs="+", choices=common.DUALS, default=list(common.DUALS), help="variants"
    )
    p.add_argument(
        "--step",
        type=common.positive_float,
        default=PRETRAINED["step"],
        help="the scalar's step (thesis, pre-trained LDF: 1e-4); the per-instance and augmented "
        "steps are this times the training instances unless --instance-step is given",
    )
    p.add_argument("--instance-step", type=common.positive_float)
    p.add_argument("--dual-lr", type=common.positive_float, default=common.DUAL_NET_LR)
    p.add_argument("--select-mu", type=common.nonnegative_float, default=1.0)
    p.add_argument("--seed", type=common.nonnegative_int, default=0)
    p.add_argument("--data-dir", default="data")
    p.add_argument("--runs", default=RUNS, help="training folders")
    p.add_argument("--results", default=RESULTS, help="where ldf_duals.md/.json.gz/.png go")
    p.add_argument("--fresh", action="store_true", help="retrain instead of resuming")
    p.add_argument(
        "--plot-only", action="store_true", help="redraw the .png from the .json.gz, then stop"
    )
    return p.parse_args(argv)


def train_one(flags):
    """One knapsack_ldf.py run in this process -> (its results dict, its command line)."""
    args = knapsack_ldf.parse_args(flags)
    common.set_threads(args.threads)
    data = knapsack_ldf.load_data(args)
    results = knapsack_ldf.run(args, data)
    return results, "python knapsack_ldf.py " + shlex.join(flags)


def common_flags(args, out):
    return [
        "--instances",
        str(args.instances),
        "--arch",
        args.arch,
        "--seed",
        str(args.seed),
        "--data-dir",
        args.data_dir,
        "--out",
        out,
    ] + (["--fresh"] if args.fresh else [])


def variant_flags(args, dual, fc_checkpoint):
    n_train = int(knapsack_ldf.TRAIN_SHARE * args.instances)
    instance_step = args.instance_step or args.step * n_train
    flags = ["--pretrained", fc_checkpoint, "--dual", dual, "--epochs", str(args.epochs)]
    flags += ["--lr", f"{args.lr:g}", "--max-grad-norm", f"{args.max_grad_norm:g}"]
    flags += ["--select-mu", f"{args.select_mu:g}", "--lambda0", f"{args.lambda0:g}"]
    if dual == "scalar":
        flags += ["--step", f"{args.step:g}"]
    elif dual == "per-instance":
        flags += ["--step", f"{instance_step:g}"]
    elif dual == "augmented":
        flags += ["--step", f"{instance_step:g}", "--rho", f"{instance_step:g}"]
    else:
        flags += ["--dual-lr", f"{args.dual_lr:g}"]
    return flags + common_flags(args, os.path.join(args.runs, args.arch, dual))


def row_of(name, result, fc_seconds, fc_epochs, command):
    raw, repaired = result["test_raw"], result["test_repair"]
    return {
        "name": name,
        "pct_violated": raw["all"]["pct_violated"],
        "ar": raw["all"]["ar"],
        "ar_quintiles": [q["ar"] for q in raw["quintiles"]],
        "ar_repaired": repaired["all"]["ar"],
        "epochs": fc_epochs + result["selected_epoch"],
        "minutes": (fc_seconds + result["seconds_to_selected"]) / SECONDS_PER_MINUTE,
        "command": command,
    }


def thesis_rows():
    rows = []
    for kind, label in [("ldf", "thesis LDF (Table 3)"), ("fc", "thesis FC (Table 2)")]:
        table = knapsack_ldf.THESIS_TABLES[kind]
        epochs, minutes = knapsack_ldf.THESIS_TRAINING[kind]
        violated_index, ar_index = 0, -1
        rows.append(
            {
                "name": label,
                "pct_violated": table[-1][violated_index],
                "ar": table[-1][ar_index],
                "ar_quintiles": [q[ar_index] for q in table[:-1]],
                "ar_repaired": None,
                "epochs": epochs,
                "minutes": minutes,
                "command": "thesis (6-core i5-11400)",
            }
        )
    return rows


def cell(value, digits):
    return "—" if value is None else f"{value:.{digits}f}"


def markdown(rows, arch, header):
    goal_violated, goal_ar = GOAL_VIOLATED[arch], GOAL_AR[arch]
    quintiles = " | ".join(f"AR α {knapsack_ldf.quintile_label(q)}" for q in range(5))
    lines = [
        header,
        "",
        f"| variant | % violated (raw) | AR (raw) | {quintiles} | AR repaired | epochs to "
        f"selected | minutes to selected | goal ≤ {goal_violated:g} % at AR ≤ {goal_ar:g} "
        "| command |",
        "|---" * 13 + "|",
    ]
    for row in rows:
        met = ""
        if not row["command"].startswith("thesis"):
            met = "met" if row["pct_violated"] <= goal_violated and row["ar"] <= goal_ar else "no"
        quintile_cells = " | ".join(cell(ar, 4) for ar in row["ar_quintiles"])
        lines.append(
            f"| {row['name']} | {cell(row['pct_violated'], 2)} | {cell(row['ar'], 4)} | "
            f"{quintile_cells} | {cell(row['ar_repaired'], 4)} | {row['epochs']} | "
            f"{cell(row['minutes'], 2)} | {met} | `{row['command']}` |"
        )
    return "\n".join(lines)


def closest_to_goal(history, arch):
    """The validation checkpoint (epoch) nearest the goal: the lowest AR among the epochs within
    the violation goal, else the lowest % violated."""
    within = [h for h in history if PERCENT * h["val_violated"] <= GOAL_VIOLATED[arch]]
    if within:
        return min(within, key=lambda h: h["val_ar"])
    return min(history, key=lambda h: h["val_violated"])


def plot(runs, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_lambda, ax_trade) = plt.subplots(1, 2, figsize=(12, 4.5))
    for dual, result in runs.items():
        history = result["history"]
        epochs = [h["epoch"] for h in history]
        (line,) = ax_lambda.plot(epochs, [h["multiplier"] for h in history], label=f"{dual} mean")
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
            [PERCENT * h["val_violated"] for h in history],
            [h["val_ar"] for h in history],
            marker="o",
            markersize=3,
            color=line.get_color(),
            label=dual,
        )
    ax_lambda.set(
        xlabel="epoch (after FC pre-training)",
        ylabel="lambda over the training instances",
        yscale="log",
        title="multiplier trajectory",
    )
    ax_lambda.legend(fontsize=7)
    ax_trade.set(
        xlabel="% of validation instances violated (raw)",
        ylabel="validation AR (raw), log scale",
        yscale="log",
        title="trade-off over the checkpoints (one point an epoch)",
    )
    ax_trade.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def results_stem(args):
    return os.path.join(args.results, "ldf_duals" + ("" if args.arch == "fc" else "_set"))


def main(argv=None):
    args = parse_args(argv)
    if args.plot_only:
        with gzip.open(results_stem(args) + ".json.gz") as f:
            runs = json.load(f)["runs"]
        del runs["fc"]
        plot(runs, results_stem(args) + ".png")
        print(f"wrote {results_stem(args)}.png")
        return
    load_before = os.getloadavg()
    started = time.perf_counter()
    fc_out = os.path.join(args.runs, args.arch, "fc")
    fc_flags = ["--model", "fc", "--epochs", str(args.fc_epochs)] + common_flags(args, fc_out)
    fc_result, fc_command = train_one(fc_flags)
    fc_seconds, fc_epochs = fc_result["seconds_to_selected"], fc_result["selected_epoch"]
    fc_checkpoint = os.path.join(fc_out, "fc.pt")
    rows = [row_of("FC (BCE), pre-training", fc_result, 0.0, 0, fc_command)]
    runs = {}
    for dual in args.duals:
        result, command = train_one(variant_flags(args, dual, fc_checkpoint))
        runs[dual] = result
        rows.append(row_of(f"LDF {dual}", result, fc_seconds, fc_epochs, command))
    rows += thesis_rows()
    wall = time.perf_counter() - started
    load_after = os.getloadavg()
    header = (
        f"Knapsack, n = 500, {args.instances} instances (thesis generator, 80/10/10 split, seed "
        f"{args.seed}), {args.arch} network; every variant from the same FC pre-training "
        f"({args.fc_epochs} epochs, its selected epoch counted in 'epochs' and 'minutes'), then "
        f"{args.epochs} epochs, selected by the {args.select_mu:g}-loss; test split. Bench wall "
        f"time {wall / SECONDS_PER_MINUTE:.1f} min, load average {load_before[0]:.2f} at the "
        f"start and {load_after[0]:.2f} at the end (`uptime`), "
        f"{common.torch.get_num_threads()} torch threads."
    )
    md = markdown(rows, args.arch, header)
    closest = []
    for dual, result in runs.items():
        best = closest_to_goal(result["history"], args.arch)
        closest.append(
            f"- {dual}: epoch {best['epoch']}, validation {PERCENT * best['val_violated']:.2f} % "
            f"violated at AR {best['val_ar']:.4f}, mean lambda {best['multiplier']:.4g}"
        )
    md += (
        "\n\nThe validation checkpoint closest to the goal (lowest AR within the violation goal, "
        "else fewest violations), per variant:\n\n" + "\n".join(closest)
    )
    print("\n" + md)
    stem = results_stem(args)
    os.makedirs(args.results, exist_ok=True)
    common.atomic_write_bytes(stem + ".md", (md + "\n").encode())
    record = {
        "rows": rows,
        "runs": {"fc": fc_result, **runs},
        "settings": vars(args),
        "wall_seconds": wall,
        "load_average": {"start": load_before, "end": load_after},
    }
    text = json.dumps(record, default=common._jsonable).encode()
    common.atomic_write_bytes(stem + ".json.gz", gzip.compress(text, mtime=0))
    plot(runs, stem + ".png")
    print(f"\nwrote {stem}.md, .json.gz and .png")


if __name__ == "__main__":
    main()
