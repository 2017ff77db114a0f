"""HiGHS warm-started from a schedule worth using (issue 23, item 3): seconds to a proven gap on
the test scenarios of the committed dataset, from the label path's own start (the reference
label: the MIP's schedule for the real price) against a start from the heuristics of section
4.4 (greedy + improve), or from a network's improved schedule (--checkpoint). Each scenario is
solved from both starts, one after the other, for each --gaps.

    python bench/csp_warmstart.py                           # 20 test scenarios, gaps 1 % and 0.5 %
    python bench/csp_warmstart.py --checkpoint fc.pt --scenarios 50
    python bench/csp_warmstart.py --checkpoint fc.pt --scenarios 200 --record ws.json

With --record, each scenario's times are written to that JSON file as it finishes (atomically) and
a later run with the same file skips the scenarios already there, so that a run of hours can be
stopped and resumed, across sessions; the table covers every recorded scenario. --part K/N runs
every N-th of the scenarios from the K-th, so that N processes (one a core) share one --record:
each merges its scenarios into the file under a lock.

    python bench/csp_warmstart.py --checkpoint fc.pt --scenarios 200 --record ws.json --part 0/2 &
    python bench/csp_warmstart.py --checkpoint fc.pt --scenarios 200 --record ws.json --part 1/2

Time it on a quiet machine: the load average is printed with the figures (and recorded).
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from csp_data import load_labels  # noqa: E402

import csp_ldf as C  # noqa: E402
from common import atomic_write_json, folder_lock  # noqa: E402

DATASET_LABELS = 2000  # the labels of Tables 7-10 (their 200 test scenarios)
TIME_LIMIT = 300.0  # seconds a solve, as the labels'


def improved_starts(ds, rows, checkpoint, space, costs):
    """(recurring_start, oneoff_start) per row: the network's repaired classes (or the greedy's)
    improved to a local optimum."""
    if checkpoint:
        ck = C.load_csp_checkpoint(checkpoint)
        model = C.checkpoint_model(ds, ck, checkpoint)
        out = C.predict(model, C.inputs(ds, ck["norm"])[rows], batch=len(rows))
        recurring, oneoff, _, _ = C.repaired_decode(out, ds)
    else:
        fallback = C.chosen_columns(space, *ds["fallback"])
        greedy = [C.price_greedy(space, cost, fallback)[0] for cost in costs]
        schedules = [C.ClassSchedule(space, chosen).decisions() for chosen in greedy]
        recurring, oneoff = (np.array(part) for part in zip(*schedules, strict=True))
    return C.improved_classes(space, costs, recurring, oneoff)[:2]


def part(text):
    """--part K/N: the K-th of N interleaved parts of the scenarios (0 <= K < N)."""
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--part {text!r}: give K/N, e.g. 0/2") from None
    if n < 1 or not 0 <= k < n:
        raise argparse.ArgumentTypeError(f"--part {text!r}: need 0 <= K < N")
    return k, n


def read_record(path):
    if path and os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return {"scenarios": {}}


def merge_into_record(path, settings, key, times):
    """Add one scenario's times to the record file, re-read under a lock so that parallel parts
    keep each other's scenarios."""
    with folder_lock(os.path.dirname(os.path.abspath(path)), what=f"--record {path}"):
        record = read_record(path)
        record["settings"] = settings
        record["scenarios"][key] = times
        atomic_write_json(path, record)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--instance", default="phase2_instance_small_0")
    p.add_argument("--scenarios", type=int, default=20, help="the first N test scenarios")
    p.add_argument("--gaps", type=float, nargs="+", default=[0.01, 0.005])
    p.add_argument("--checkpoint", help="a CSP network (default: greedy + improve)")
    p.add_argument("--torch-threads", type=int, default=1)
    p.add_argument("--record", help="JSON file of per-scenario times: resumed, then extended")
    p.add_argument(
        "--part", type=part, default=(0, 1), help="K/N: every N-th scenario from the K-th"
    )
    args = p.parse_args()
    C.torch.set_num_threads(args.torch_threads)

    ds = load_labels(DATASET_LABELS, instance=args.instance)
    rows = ds["split"]["test"][: args.scenarios]
    mip = C.build_mip(ds["inst"], ds["base"], ds["solar"])
    space = C.schedule_space(mip)
    costs = C.column_costs(mip, ds["price"][rows])
    recurring, oneoff = improved_starts(ds, rows, args.checkpoint, space, costs)
    reference = dict(recurring_start=ds["fallback"][0], oneoff_start=ds["fallback"][1])
    improved_name = (
        f"{Path(args.checkpoint).stem} + improve" if args.checkpoint else "greedy + improve"
    )
    record = read_record(args.record)
    settings = {"checkpoint": args.checkpoint, "gaps": args.gaps, "start": improved_name}
    settings["ejection_targets"] = C.EJECTION_TARGETS
    if record.get("settings", settings) != settings:
        raise SystemExit(
            f"--record {args.record}: made with {record['settings']}, not {settings}; "
            "give another file"
        )
    print(f"load average before: {os.getloadavg()[0]:.2f} (2 cores); {len(rows)} test scenarios")
    k, n = args.part
    for j, i in enumerate(rows):
        key = str(ds["index"][i])
        if j % n != k or key in record["scenarios"]:
            continue
        starts = {
            "reference label": reference,
            improved_name: dict(recurring_start=recurring[j], oneoff_start=oneoff[j]),
        }
        row = f"scenario {key}:"
        times = {"load": os.getloadavg()[0]}
        for gap in args.gaps:
            for start_name, start in starts.items():
                t0 = time.perf_counter()
                label = C.solve_highs(
                    mip, ds["price"][i], gap=gap, time_limit=TIME_LIMIT, start=start
                )
                took = time.perf_counter() - t0
                reached = label["gap"] <= gap
                times[f"{start_name} {gap:g}"] = took if reached else None
                row += f"  {start_name} {100 * gap:g} % {took:5.1f} s"
        record["scenarios"][key] = times
        if args.record:
            merge_into_record(args.record, settings, key, times)
        print(row, flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if args.record:
        record = read_record(args.record)  # with the other parts' scenarios
    keys = [str(ds["index"][i]) for i in rows]
    done = [record["scenarios"][key] for key in keys if key in record["scenarios"]]
    if len(done) < len(keys):
        print(f"{len(keys) - len(done)} of {len(keys)} scenarios not recorded yet (other parts)")
    loads = [times["load"] for times in done]
    print(f"{len(done)} scenarios, load {min(loads):.2f}-{max(loads):.2f} when each began")
    print("| start | proven gap | mean s | median s | max s | reached within the limit |")
    print("|---|---|---|---|---|---|")
    for gap in args.gaps:
        for start_name in ("reference label", improved_name):
            values = [times[f"{start_name} {gap:g}"] for times in done]
            reached = np.array([v for v in values if v is not None])
            print(
                f"| {start_name} | {100 * gap:g} % | {reached.mean():.2f} | "
                f"{np.median(reached):.2f} | {reached.max():.2f} | {len(reached)}/{len(values)} |"
            )


if __name__ == "__main__":
    main()
