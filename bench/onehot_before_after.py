"""The one-hot op's CPU kernels before and after a change, side by side in one process: the op of
the working tree (csrc/ops.py) against the op of csrc/ at a git revision, built under another
name. Both run alternately on the same tensors, forward and backward apart, and the table says
whether their outputs are the same bit for bit.

    python bench/onehot_before_after.py --rev HEAD          # HEAD against the working tree
    python bench/onehot_before_after.py --rev HEAD~1 --reps 31 --threads 1

The old sources (csrc/onehot*.cpp, *.h at --rev) are copied with their C++ namespace and op
namespace renamed (ldf_ip -> ldf_ip_before) and JIT-built into --build-dir (once; ninja rebuilds
only what changed). Times are medians (and minima) over --reps of the op alone (no autograd), the
two ops called in turn, ABBA.
"""

import argparse
import fnmatch
import os
import statistics
import subprocess
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import common  # noqa: E402
from csrc import ops  # noqa: E402

OLD_NAMESPACE = "ldf_ip_before"
OLD_LIBRARY = "ldf_ip_onehot_before"
OLD_SOURCE_PATTERNS = ("csrc/onehot*.cpp", "csrc/onehot*.h")
DEFAULT_BUILD_DIR = os.path.join(ROOT, "build", "onehot-before")
DEFAULT_REPS = 21
K = ops.DEFAULT_K
# (shape, dim = -1): bench/onehot.py's CSP heads at batch 256, then rows of C = 2, 4 and 20
SHAPES = [
    (256, 50, 160),
    (256, 20, 2881),
    (256, 2, 2880, 3),
    (1 << 20, 2),
    (1 << 20, 4),
    (1 << 16, 20),
]
DTYPES = ("float32", "float64")


def old_sources(rev, out_dir):
    """Write the op's sources at `rev`, renamed, into out_dir; return the .cpp paths to build."""
    listed = subprocess.run(
        ["git", "-C", ROOT, "ls-tree", "--name-only", rev, "csrc/"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    wanted = [p for p in listed if any(fnmatch.fnmatch(p, pat) for pat in OLD_SOURCE_PATTERNS)]
    os.makedirs(out_dir, exist_ok=True)
    cpp = []
    for path in wanted:
        text = subprocess.run(
            ["git", "-C", ROOT, "show", f"{rev}:{path}"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        text = text.replace("ldf_ip::", OLD_NAMESPACE + "::")
        text = text.replace("namespace ldf_ip ", f"namespace {OLD_NAMESPACE} ")
        text = text.replace("namespace ldf_ip {", f"namespace {OLD_NAMESPACE} {{")
        text = text.replace("TORCH_LIBRARY(ldf_ip,", f"TORCH_LIBRARY({OLD_NAMESPACE},")
        text = text.replace("TORCH_LIBRARY_IMPL(ldf_ip,", f"TORCH_LIBRARY_IMPL({OLD_NAMESPACE},")
        text = text.replace("PyInit__ldf_ip_ops", "PyInit__ldf_ip_ops_before_unused")
        target = os.path.join(out_dir, os.path.basename(path))
        old = open(target).read() if os.path.exists(target) else None
        if old != text:  # leave the file's time alone when unchanged, so ninja skips it
            with open(target, "w") as f:
                f.write(text)
        if path.endswith(".cpp") and not path.endswith("_cuda.cpp"):
            cpp.append(target)
    return cpp


def load_old_op(rev, build_dir):
    from torch.utils.cpp_extension import load

    sources = old_sources(rev, os.path.join(build_dir, "src"))
    load(
        name=OLD_LIBRARY,
        sources=sources,
        build_directory=build_dir,
        is_python_module=False,
        extra_cflags=ops.CXX_FLAGS,
        extra_ldflags=ops.LINK_FLAGS,
    )
    return getattr(torch.ops, OLD_NAMESPACE)


def seconds(f):
    start = time.perf_counter()
    f()
    return time.perf_counter() - start


def bench(namespaces, shape, dtype, reps):
    """{pass: {side: (median, min) seconds}} and whether the outputs agree bit for bit."""
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(*shape, generator=gen, dtype=dtype)
    g = torch.randn(*shape, generator=gen, dtype=dtype)
    calls, results = {}, {}
    for side, ns in namespaces.items():
        out, index = ns.onehot_surrogate(z, K, -1)
        grad = ns.onehot_surrogate_backward(g, z, index, K, -1)
        results[side] = (out, index, grad)
        calls[side] = {
            "forward": lambda ns=ns: ns.onehot_surrogate(z, K, -1),
            "backward": lambda ns=ns, index=index: ns.onehot_surrogate_backward(g, z, index, K, -1),
        }
    before, after = results.values()
    same = all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
    times = {}
    for name in ("forward", "backward"):
        samples = {side: [] for side in namespaces}
        order = list(namespaces)
        for _ in range(reps):  # alternate (ABBA), so that a busy machine slows both alike
            for side in order:
                samples[side].append(seconds(calls[side][name]))
            order.reverse()
        times[name] = {side: (statistics.median(ts), min(ts)) for side, ts in samples.items()}
    return times, same


def load_average():
    with open("/proc/loadavg") as f:
        return f.read().strip()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rev", default="HEAD", help="git revision of the 'before' op")
    parser.add_argument("--reps", type=common.positive_int, default=DEFAULT_REPS)
    parser.add_argument("--threads", type=common.positive_int, default=1)
    parser.add_argument("--build-dir", default=DEFAULT_BUILD_DIR)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if ops.ONEHOT_IMPL == "torch":
        sys.exit("the C++ op of the working tree could not be loaded")
    namespaces = {"before": load_old_op(args.rev, args.build_dir), "after": torch.ops.ldf_ip}
    print(f"before: csrc/ at {args.rev}; after: the working tree ({ops.ONEHOT_IMPL})")
    print(f"{args.threads} thread(s), median of {args.reps}, k={K}, dim=-1")
    print(f"load average before: {load_average()}\n")
    header = "| shape | C | dtype | pass | before ms | after ms | after/before | min before ms "
    print(header + "| min after ms | min after/before | same bits |")
    print("|---|---:|---|---|---:|---:|---:|---:|---:|---:|---|")
    for shape in SHAPES:
        for dtype_name in DTYPES:
            times, same = bench(namespaces, shape, getattr(torch, dtype_name), args.reps)
            for name, t in times.items():
                (before, before_min), (after, after_min) = t["before"], t["after"]
                row = [str(shape), str(shape[-1]), dtype_name, name]
                row += [f"{before * 1e3:.3f}", f"{after * 1e3:.3f}", f"{after / before:.2f}"]
                row += [f"{before_min * 1e3:.3f}", f"{after_min * 1e3:.3f}"]
                row += [f"{after_min / before_min:.2f}", "yes" if same else "no"]
                print("| " + " | ".join(row) + " |", flush=True)
    print(f"\nload average after: {load_average()}")


if __name__ == "__main__":
    main()
