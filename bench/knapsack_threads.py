"""Training throughput under CPU contention: torch thread settings side by side.

Runs the same 20 training steps of the thesis' FC network (n = 500, batch 256, bf16 autocast
where the CPU has it) in fresh processes, each thread setting once on its own and once beside
`--busy` busy-loop processes (another job on the machine), and prints seconds per step and the
slow-down the competitor causes. OMP_WAIT_POLICY must be set before torch loads, hence the
subprocesses.

    python bench/knapsack_threads.py --busy 1
"""

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time

STEPS = 20
BATCH = 256
ITEMS = 500

WORKER = r"""
import json, sys, time
import torch
import torch.nn.functional as F
sys.path.insert(0, {root!r})
import knapsack_ldf
torch.set_num_threads({threads})
bf16 = knapsack_ldf.use_bf16("auto", torch.device("cpu"))
torch.manual_seed(0)
model = knapsack_ldf.make_model({items})
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
x = torch.randn({steps} * {batch}, 2 * {items} + 1)
y = (torch.rand({steps} * {batch}, {items}) > 0.5).float()
def epoch():
    started = time.perf_counter()
    for start in range(0, len(x), {batch}):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(x[start:start + {batch}]).float()
        loss = F.binary_cross_entropy_with_logits(logits, y[start:start + {batch}])
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    return (time.perf_counter() - started) / {steps}
epoch()
print(json.dumps({{"seconds_per_step": min(epoch() for _ in range(2)), "bf16": bf16}}))
"""


def spin(stop_at):
    while time.time() < stop_at:
        pass


def measure(threads, wait_policy):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = WORKER.format(root=root, threads=threads, items=ITEMS, steps=STEPS, batch=BATCH)
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    if wait_policy:
        env["OMP_WAIT_POLICY"] = wait_policy
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])["seconds_per_step"]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--busy", type=int, default=1, help="busy-loop processes beside the job")
    p.add_argument("--threads", type=int, nargs="+", default=[os.cpu_count(), 1])
    args = p.parse_args()
    settings = [(t, None) for t in args.threads] + [(args.threads[0], "PASSIVE")]
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at the start\n")
    print("| threads | OMP_WAIT_POLICY | s/step alone | s/step beside busy | slow-down |")
    print("|---|---|---|---|---|")
    for threads, policy in settings:
        alone = measure(threads, policy)
        spinners = [mp.Process(target=spin, args=(time.time() + 600,)) for _ in range(args.busy)]
        for s in spinners:
            s.start()
        try:
            busy = measure(threads, policy)
        finally:
            for s in spinners:
                s.terminate()
        print(
            f"| {threads} | {policy or 'default'} | {alone:.3f} | {busy:.3f} "
            f"| {busy / alone:.1f}x |",
            flush=True,
        )


if __name__ == "__main__":
    main()
