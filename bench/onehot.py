"""Forward+backward time of the one-hot surrogate (thesis eq. 16) on the three CSP heads:
the thesis' vmap reference, the pure-PyTorch fallback and the C++ op (and the CUDA op on a GPU).

    python bench/onehot.py                       # batch 64 and 256, CPU (and GPU when there is one)
    python bench/onehot.py --batch 64 --reps 9 --threads 2

Times are medians over --reps; the fallback and the C++ op alternate within a rep so that a busy
machine slows both alike. The reference runs once per shape (3 times when quick), and is dropped
where it takes more than --ref-limit seconds. GPU rows give the achieved memory bandwidth (the
bytes each kernel must move: forward reads z, writes the one-hot and the index; backward reads z, g
and the index, writes the gradient) as a share of the card's peak.

On a machine shared with other jobs, times with 2+ threads can be dominated by OpenMP worker threads
spin-waiting for a CPU (libgomp's default wait policy), for both implementations alike;
OMP_WAIT_POLICY=passive shows the kernels' own times there.
"""
import argparse
import os
import signal
import statistics
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))
import common  # noqa: E402
from onehot_reference import onehot_reference  # noqa: E402

SHAPES = [(50, 160), (20, 2881), (2, 2880, 3)]  # CSP heads, without the batch


def ext(z, k, dim):
    return torch.ops.ldf_ip.onehot_surrogate(z, k, dim)[0]


def step(f, z, g, k):
    z.grad = None
    f(z, k, -1).backward(g)
    if z.is_cuda:
        torch.cuda.synchronize()


def timed(f, z, g, k):
    start = time.perf_counter()
    step(f, z, g, k)
    return time.perf_counter() - start


def time_reference(z, g, k, limit):
    """Seconds per call of the vmap reference, or None past `limit` seconds."""
    def give_up(*_):
        raise TimeoutError
    old = signal.signal(signal.SIGALRM, give_up)
    signal.alarm(int(limit))
    try:
        times = [timed(onehot_reference, z, g, k)]
        if times[0] < limit / 20:
            times += [timed(onehot_reference, z, g, k) for _ in range(2)]
        return statistics.median(times)
    except TimeoutError:
        return None
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def peak_bandwidth(device):
    p = torch.cuda.get_device_properties(device)
    clock, width = getattr(p, "memory_clock_rate", 0), getattr(p, "memory_bus_width", 0)
    return 2 * clock * 1e3 * width / 8 if clock and width else None  # double data rate, bytes/s


def ms(seconds):
    return "-" if seconds is None else f"{seconds * 1e3:.3g} ms" if seconds < 1 else f"{seconds:.3g} s"


def ratio(a, b):
    return "-" if a is None or b is None else f"{a / b:.3g}x"


def bench_cpu(args):
    print(f"CPU ({torch.get_num_threads()} threads), {args.dtype}, k={args.k}, one-hot op: "
          f"{common.ONEHOT_IMPL}; forward+backward, median of {args.reps}")
    print(f"{'shape':<18} {'vmap ref':>10} {'PyTorch':>10} {'C++ op':>10} {'PyTorch/C++':>12} "
          f"{'ref/C++':>9}")
    dtype = getattr(torch, args.dtype)
    for batch in args.batch:
        for shape in SHAPES:
            gen = torch.Generator().manual_seed(0)
            z = torch.randn(batch, *shape, generator=gen, dtype=dtype).requires_grad_()
            g = torch.randn(batch, *shape, generator=gen, dtype=dtype)
            impls = {"torch": common.onehot_surrogate_torch}
            if common.ONEHOT_IMPL != "torch":
                impls["ext"] = ext
            for f in impls.values():
                step(f, z, g, args.k)  # warm-up
            times = {name: [] for name in impls}
            for _ in range(args.reps):
                for name, f in impls.items():
                    times[name].append(timed(f, z, g, args.k))
            t = {name: statistics.median(ts) for name, ts in times.items()}
            ref = None if args.ref_limit <= 0 else time_reference(z, g, args.k, args.ref_limit)
            ref_text, ref_ratio = ms(ref), ratio(ref, t.get("ext"))
            if ref is None and args.ref_limit > 0:  # gave up: the limit is a lower bound
                ref_text, ref_ratio = f">{args.ref_limit:.0f} s", ">" + ratio(args.ref_limit, t.get("ext"))
            print(f"{str((batch, *shape)):<18} {ref_text:>10} {ms(t['torch']):>10} "
                  f"{ms(t.get('ext')):>10} {ratio(t['torch'], t.get('ext')):>12} {ref_ratio:>9}",
                  flush=True)


def bench_cuda(args):
    device = torch.device("cuda")
    peak = peak_bandwidth(device)
    print(f"\n{torch.cuda.get_device_name(device)}, {args.dtype}, CUDA op: {common._ONEHOT_CUDA}; "
          f"median of {args.reps}, peak bandwidth {peak / 1e9:.0f} GB/s" if peak else "")
    print(f"{'shape':<18} {'PyTorch':>10} {'op fwd+bwd':>11} {'PyTorch/op':>11} {'fwd GB/s':>9} "
          f"{'bwd GB/s':>9} {'bwd % peak':>10}")
    dtype = getattr(torch, args.dtype)
    for batch in args.batch:
        for shape in SHAPES:
            z = torch.randn(batch, *shape, device=device, dtype=dtype).requires_grad_()
            g = torch.randn(batch, *shape, device=device, dtype=dtype)
            t_torch = statistics.median(
                [timed(common.onehot_surrogate_torch, z, g, args.k) for _ in range(args.reps + 1)][1:])
            t_op = statistics.median([timed(ext, z, g, args.k) for _ in range(args.reps + 1)][1:])
            out, index = torch.ops.ldf_ip.onehot_surrogate(z.detach(), args.k, -1)
            fwd = lambda: torch.ops.ldf_ip.onehot_surrogate(z.detach(), args.k, -1)  # noqa: E731
            bwd = lambda: torch.ops.ldf_ip.onehot_surrogate_backward(  # noqa: E731
                g, z.detach(), index, args.k, -1)
            n, item, rows = z.numel(), z.element_size(), index.numel()
            gbs = [(2 * n * item + 8 * rows) / cuda_time(fwd, args.reps) / 1e9,
                   (3 * n * item + 8 * rows) / cuda_time(bwd, args.reps) / 1e9]
            share = f"{gbs[1] * 1e9 / peak:.0%}" if peak else "-"
            print(f"{str((batch, *shape)):<18} {ms(t_torch):>10} {ms(t_op):>11} "
                  f"{ratio(t_torch, t_op):>11} {gbs[0]:>9.0f} {gbs[1]:>9.0f} {share:>10}", flush=True)


def cuda_time(f, reps):
    """Median kernel time in seconds, by CUDA events."""
    f()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        f()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=common.positive_int, nargs="+", default=[64, 256])
    parser.add_argument("--reps", type=common.positive_int, default=7)
    parser.add_argument("--threads", type=common.positive_int, default=None)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--k", type=common.positive_float, default=20.0)
    parser.add_argument("--ref-limit", type=float, default=60.0,
                        help="seconds the vmap reference may take per shape (0: skip it)")
    parser.add_argument("--no-cuda", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    bench_cpu(args)
    if torch.cuda.is_available() and not args.no_cuda:
        bench_cuda(args)


if __name__ == "__main__":
    main()
