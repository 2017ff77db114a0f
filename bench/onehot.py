"""Forward+backward time of the one-hot surrogate (thesis eq. 16) on the three CSP heads:
the thesis' vmap reference (csrc/reference.py), the pure-PyTorch fallback and the C++ op (and
the CUDA op on a GPU), all three from csrc/.

    python bench/onehot.py                       # batch 64 and 256, CPU (and GPU when there is one)
    python bench/onehot.py --batch 64 --reps 9 --threads 2

Times are medians over --reps; the fallback and the C++ op alternate within a rep so that a busy
machine slows both alike. The reference runs once per shape (3 times when quick), and is dropped
where it takes more than --ref-limit seconds. GPU rows give the achieved memory bandwidth (the
bytes each kernel must move: forward reads z, writes the one-hot and the index; backward reads z,
g and the index, writes the gradient) as a share of the card's peak.

On a machine shared with other jobs, times with 2+ threads can be dominated by OpenMP worker
threads spin-waiting for a CPU (libgomp's default wait policy), for both implementations alike;
OMP_WAIT_POLICY=passive shows the kernels' own times there.
"""

import argparse
import os
import signal
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo root
import common
from csrc import ops
from csrc.reference import onehot_reference

SHAPES = [(50, 160), (20, 2881), (2, 2880, 3)]  # CSP heads, without the batch
DEFAULT_BATCHES = [64, 256]
DEFAULT_REPS = 7
DEFAULT_REF_LIMIT_S = 60.0
QUICK_REFERENCE_SHARE = 1 / 20  # a reference call under this share of the limit is run again...
QUICK_REFERENCE_EXTRA_RUNS = 2  # ...this many times more
INDEX_BYTES = 8  # the op's argmax index is int64


def ext(z, k, dim):
    onehot, _index = torch.ops.ldf_ip.onehot_surrogate(z, k, dim)
    return onehot


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
        if times[0] < limit * QUICK_REFERENCE_SHARE:
            times += [timed(onehot_reference, z, g, k) for _ in range(QUICK_REFERENCE_EXTRA_RUNS)]
        return statistics.median(times)
    except TimeoutError:
        return None
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def peak_bandwidth(device):
    """The card's peak memory bandwidth in bytes/s (double data rate), or None if unknown."""
    properties = torch.cuda.get_device_properties(device)
    clock_khz = getattr(properties, "memory_clock_rate", 0)
    bus_bits = getattr(properties, "memory_bus_width", 0)
    if not (clock_khz and bus_bits):
        return None
    return 2 * clock_khz * 1e3 * bus_bits / 8


def ms(seconds):
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds:.3g} s"


def ratio(a, b):
    return "-" if a is None or b is None else f"{a / b:.3g}x"


def median_time(f, z, g, k, reps):
    """Median of reps timed calls after one untimed warm-up."""
    step(f, z, g, k)
    return statistics.median(timed(f, z, g, k) for _ in range(reps))


def bench_cpu(args):
    print(
        f"CPU ({torch.get_num_threads()} threads), {args.dtype}, k={args.k}, one-hot op: "
        f"{ops.ONEHOT_IMPL}; forward+backward, median of {args.reps}"
    )
    header = ["shape".ljust(18), "vmap ref".rjust(10), "PyTorch".rjust(10), "C++ op".rjust(10)]
    header += ["PyTorch/C++".rjust(12), "ref/C++".rjust(9)]
    print(" ".join(header))
    dtype = getattr(torch, args.dtype)
    for batch in args.batch:
        for shape in SHAPES:
            gen = torch.Generator().manual_seed(0)
            z = torch.randn(batch, *shape, generator=gen, dtype=dtype).requires_grad_()
            g = torch.randn(batch, *shape, generator=gen, dtype=dtype)
            impls = {"torch": ops.onehot_surrogate_torch}
            if ops.ONEHOT_IMPL != "torch":
                impls["ext"] = ext
            for f in impls.values():
                step(f, z, g, args.k)  # warm-up
            times = {name: [] for name in impls}
            for _ in range(args.reps):
                for name, f in impls.items():
                    times[name].append(timed(f, z, g, args.k))
            t = {name: statistics.median(ts) for name, ts in times.items()}
            t_torch, t_ext = t["torch"], t.get("ext")

            ref = None
            if args.ref_limit > 0:
                ref = time_reference(z, g, args.k, args.ref_limit)
            ref_text, ref_ratio = ms(ref), ratio(ref, t_ext)
            if ref is None and args.ref_limit > 0:  # gave up: the limit is a lower bound
                ref_text = f">{args.ref_limit:.0f} s"
                ref_ratio = ">" + ratio(args.ref_limit, t_ext)

            row = [str((batch, *shape)).ljust(18), ref_text.rjust(10), ms(t_torch).rjust(10)]
            row += [ms(t_ext).rjust(10), ratio(t_torch, t_ext).rjust(12), ref_ratio.rjust(9)]
            print(" ".join(row), flush=True)


def bench_cuda(args):
    device = torch.device("cuda")
    peak = peak_bandwidth(device)
    peak_text = f", peak bandwidth {peak / 1e9:.0f} GB/s" if peak else ""
    print(
        f"\n{torch.cuda.get_device_name(device)}, {args.dtype}, CUDA op: {ops.ONEHOT_CUDA}; "
        f"median of {args.reps}{peak_text}"
    )
    header = ["shape".ljust(18), "PyTorch".rjust(10), "op fwd+bwd".rjust(11)]
    header += ["PyTorch/op".rjust(11), "fwd GB/s".rjust(9), "bwd GB/s".rjust(9)]
    header += ["bwd % peak".rjust(10)]
    print(" ".join(header))
    dtype = getattr(torch, args.dtype)
    for batch in args.batch:
        for shape in SHAPES:
            z = torch.randn(batch, *shape, device=device, dtype=dtype).requires_grad_()
            g = torch.randn(batch, *shape, device=device, dtype=dtype)
            t_torch = median_time(ops.onehot_surrogate_torch, z, g, args.k, args.reps)
            t_op = median_time(ext, z, g, args.k, args.reps)

            z_data = z.detach()
            _, index = torch.ops.ldf_ip.onehot_surrogate(z_data, args.k, -1)

            def forward(z_data=z_data):
                return torch.ops.ldf_ip.onehot_surrogate(z_data, args.k, -1)

            def backward(g=g, z_data=z_data, index=index):
                return torch.ops.ldf_ip.onehot_surrogate_backward(g, z_data, index, args.k, -1)

            tensor_bytes = z.numel() * z.element_size()
            index_bytes = index.numel() * INDEX_BYTES
            forward_bytes = 2 * tensor_bytes + index_bytes  # reads z; writes one-hot and index
            backward_bytes = 3 * tensor_bytes + index_bytes  # reads z, g and index; writes grad
            forward_gbs = forward_bytes / cuda_time(forward, args.reps) / 1e9
            backward_gbs = backward_bytes / cuda_time(backward, args.reps) / 1e9
            share = f"{backward_gbs * 1e9 / peak:.0%}" if peak else "-"

            row = [str((batch, *shape)).ljust(18), ms(t_torch).rjust(10), ms(t_op).rjust(11)]
            row += [ratio(t_torch, t_op).rjust(11), f"{forward_gbs:>9.0f}", f"{backward_gbs:>9.0f}"]
            row += [share.rjust(10)]
            print(" ".join(row), flush=True)


def cuda_time(f, reps):
    """Median kernel time in seconds, by CUDA events."""
    f()
    times = []
    for _ in range(reps):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        f()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=common.positive_int, nargs="+", default=DEFAULT_BATCHES)
    parser.add_argument("--reps", type=common.positive_int, default=DEFAULT_REPS)
    parser.add_argument("--threads", type=common.positive_int, default=None)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--k", type=common.positive_float, default=ops.DEFAULT_K)
    parser.add_argument(
        "--ref-limit",
        type=common.nonnegative_float,
        default=DEFAULT_REF_LIMIT_S,
        help="seconds the vmap reference may take per shape (0: skip it)",
    )
    parser.add_argument("--no-cuda", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    bench_cpu(args)
    if torch.cuda.is_available() and not args.no_cuda:
        bench_cuda(args)


if __name__ == "__main__":
    main()
