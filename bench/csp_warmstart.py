"""HiGHS warm-started from a schedule worth using (issue 23, item 3): seconds to a proven gap on
the test scenarios of the committed dataset, from the label path's own start (the reference
label: the MIP's schedule for the real price) against a start from the heuristics of section
4.4 (greedy + improve), or from a network's improved schedule (--checkpoint). Each scenario is
solved from both starts, one after the other, for each --gaps.

    python bench/csp_warmstart.py                           # 20 test scenarios, gaps 1 % and 0.5 %
    python bench/csp_warmstart.py --checkpoint fc.pt --scenarios 50

Time it on a quiet machine: the load average is printed with the figures.
"""

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import csp_ldf as C  # noqa: E402

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


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--instance", default="phase2_instance_small_0")
    p.add_argument("--scenarios", type=int, default=20, help="the first N test scenarios")
    p.add_argument("--gaps", type=float, nargs="+", default=[0.01, 0.005])
    p.add_argument("--checkpoint", help="a CSP network (default: greedy + improve)")
    p.add_argument("--torch-threads", type=int, default=1)
    args = p.parse_args()
    C.torch.set_num_threads(args.torch_threads)

    data = C.find_data_dir(None)
    price = C.read_price(data)
    inst = C.read_instance(data / "instances" / f"{args.instance}.txt")
    base, solar = C.read_loads(data, "forecast")
    name = f"{inst['name']}-forecast-block{C.DAY}-seed0"
    folder = Path("data/csp_labels") / name
    dataset = Path(C.__file__).parent / C.DATASET_FOLDER / name
    ds = C.load_dataset(inst, base, solar, folder, 0, DATASET_LABELS, price, dataset=dataset)
    rows = ds["split"]["test"][: args.scenarios]
    mip = C.build_mip(inst, base, solar)
    space = C.schedule_space(mip)
    costs = C.column_costs(mip, ds["price"][rows])
    recurring, oneoff = improved_starts(ds, rows, args.checkpoint, space, costs)
    reference = dict(recurring_start=ds["fallback"][0], oneoff_start=ds["fallback"][1])
    improved_name = (
        f"{Path(args.checkpoint).stem} + improve" if args.checkpoint else "greedy + improve"
    )
    print(f"load average before: {os.getloadavg()[0]:.2f} (2 cores); {len(rows)} test scenarios")
    seconds = {}
    for j, i in enumerate(rows):
        starts = {
            "reference label": reference,
            improved_name: dict(recurring_start=recurring[j], oneoff_start=oneoff[j]),
        }
        row = f"scenario {ds['index'][i]}:"
        for gap in args.gaps:
            for start_name, start in starts.items():
                t0 = time.perf_counter()
                label = C.solve_highs(
                    mip, ds["price"][i], gap=gap, time_limit=TIME_LIMIT, start=start
                )
                took = time.perf_counter() - t0
                reached = label["gap"] <= gap
                seconds.setdefault((start_name, gap), []).append(took if reached else np.inf)
                row += f"  {start_name} {100 * gap:g} % {took:5.1f} s"
        print(row, flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print("| start | proven gap | mean s | median s | max s | reached within the limit |")
    print("|---|---|---|---|---|---|")
    for (start_name, gap), values in seconds.items():
        values = np.array(values)
        done = values[np.isfinite(values)]
        print(
            f"| {start_name} | {100 * gap:g} % | {done.mean():.2f} | {np.median(done):.2f} | "
            f"{done.max():.2f} | {len(done)}/{len(values)} |"
        )


if __name__ == "__main__":
    main()
