"""The CSP local improvement in Python (csp_ldf.improve_python) against the C++ op
ldf_ip::csp_improve (csrc/csp_improve.h), side by side in one run: ms a scenario to the local
optimum, from the price-aware greedy's schedules (and a network's repaired ones with
--checkpoint) on the test scenarios of the committed dataset. Both must end at the same schedule
in the same number of passes; the script stops if they do not.

    python bench/csp_improve.py                       # greedy starts, the 200 test scenarios
    python bench/csp_improve.py --checkpoint fc.pt --scenarios 50

Time it on a quiet machine: the load average is printed with the figures.
"""

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from csp_data import load_labels  # noqa: E402

import csp_ldf as C  # noqa: E402

DATASET_LABELS = 2000  # the labels of Tables 7-10 (their 200 test scenarios)


def starts(ds, rows, space, costs, checkpoint):
    """{start's name: chosen columns per row}: the greedy's, and the network's repaired ones."""
    fallback = C.chosen_columns(space, *ds["fallback"])
    found = {"greedy": [C.price_greedy(space, cost, fallback)[0] for cost in costs]}
    if checkpoint:
        ck = C.load_csp_checkpoint(checkpoint)
        model = C.checkpoint_model(ds, ck, checkpoint)
        out = C.predict(model, C.inputs(ds, ck["norm"])[rows], batch=len(rows))
        recurring, oneoff, _, _ = C.repaired_decode(out, ds)
        name = f"{Path(checkpoint).stem} repaired"
        found[name] = [
            C.chosen_columns(space, r, o) for r, o in zip(recurring, oneoff, strict=True)
        ]
    return found


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--instance", default="phase2_instance_small_0")
    p.add_argument("--scenarios", type=int, default=200, help="the first N test scenarios")
    p.add_argument("--checkpoint", help="also start from this CSP network's repaired schedules")
    args = p.parse_args()
    if not C.csp_op.available():
        raise SystemExit("bench/csp_improve.py: the C++ op ldf_ip::csp_improve cannot run here")

    ds = load_labels(DATASET_LABELS, instance=args.instance)
    rows = ds["split"]["test"][: args.scenarios]
    mip = C.build_mip(ds["inst"], ds["base"], ds["solar"])
    space = C.schedule_space(mip)
    costs = C.column_costs(mip, ds["price"][rows])
    found = starts(ds, rows, space, costs, args.checkpoint)
    C.improve(space, found["greedy"][0], costs[0], compiled=True)  # (the op's packing, once)

    print(
        f"{platform.processor() or platform.machine()}, load average before: "
        f"{os.getloadavg()[0]:.2f}; {len(rows)} test scenarios, one thread"
    )
    print("| start | Python ms / scenario | C++ ms / scenario | ratio | same schedules |")
    print("|---|---|---|---|---|")
    for start_name, chosen in found.items():
        seconds = {False: [], True: []}
        for start, cost in zip(chosen, costs, strict=True):
            ends = {}
            for compiled in (False, True):  # alternately, so that both see the same load
                t0 = time.perf_counter()
                ends[compiled] = C.improve(space, start, cost, compiled=compiled)
                seconds[compiled].append(time.perf_counter() - t0)
            (python, python_passes), (op, op_passes) = ends[False], ends[True]
            if not (np.array_equal(python, op) and python_passes == op_passes):
                raise SystemExit(f"{start_name}: the op and Python end at different schedules")
        python_ms, op_ms = (1000 * np.mean(seconds[c]) for c in (False, True))
        print(
            f"| {start_name} | {python_ms:.1f} | {op_ms:.2f} | {python_ms / op_ms:.1f}x | "
            f"{len(chosen)}/{len(chosen)} |"
        )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
