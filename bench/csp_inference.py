"""Inference time per instance of the CSP network (thesis 4.3), batched on CPU: the convolutions as
the thesis' Conv1d against csp_ldf's (1, k) Conv2d on a channels-last input, each with float32 and
with bfloat16 weights (--bf16).

    python bench/csp_inference.py          # small_0 sizes, batches 16 and 64, 2 threads
    python bench/csp_inference.py --threads 1 --reps 5

All four variants share one set of weights, so they compute the same function; the last column is
the share of the argmax decisions (recurring, one-off, battery) that agree with float32 Conv1d.
Times are medians over --reps, the variants alternating within a rep so that a busy machine slows
all alike. The issue's target: <= 2 ms.
"""

import argparse
import copy
import os
import statistics
import sys
import time

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import csp_ldf as C  # noqa: E402


def conv1d_net(net):
    """A copy of net whose feature extractor is the thesis' Conv1d / BatchNorm1d / MaxPool1d
    (the same weights); tests/test_csp_model.py checks that it computes the same function."""
    net = copy.deepcopy(net)
    layers = [nn.Flatten(1, 2)]  # (B, 3, 1, T) -> (B, 3, T)
    for m in net.features:
        if isinstance(m, nn.Conv2d):
            c = nn.Conv1d(m.in_channels, m.out_channels, m.kernel_size[1])
            c.weight.data, c.bias.data = m.weight.data[:, :, 0], m.bias.data
            m = c
        elif isinstance(m, nn.BatchNorm2d):
            b = nn.BatchNorm1d(m.num_features)
            b.load_state_dict(m.state_dict())
            m = b
        elif isinstance(m, nn.MaxPool2d):
            m = nn.MaxPool1d(m.kernel_size[1])
        layers.append(m)
    net.features = nn.Sequential(*layers)
    return net.eval()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--instance", default="phase2_instance_small_0")
    p.add_argument("--batch", type=C.int_list, default=(16, 64))
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    inst = C.read_instance(C.find_data_dir() / "instances" / f"{args.instance}.txt")
    T = C.NOVEMBER_DAYS * C.DAY
    torch.manual_seed(0)
    net = C.CSPNet(inst, T).eval()
    models = {"Conv1d": conv1d_net(net), "Conv2d channels-last": net}
    half = {name: copy.deepcopy(m).bfloat16() for name, m in models.items()}
    n_parameters = sum(q.numel() for q in net.parameters())
    print(
        f"{args.instance}: {n_parameters / 1e6:.1f} M parameters, {args.threads} thread(s), "
        f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}"
    )
    for B in args.batch:
        x = torch.randn(B, len(C.INPUT_SERIES), T)
        variants = [
            (name, (half if bf else models)[name], bf) for bf in (False, True) for name in models
        ]
        times = {(name, bf): [] for name, _, bf in variants}
        outs = {}
        for name, m, bf in variants:  # warm-up, and the decisions
            outs[name, bf] = C.predict(m, x, B)
        for _ in range(args.reps):
            for name, m, bf in variants:
                t = time.perf_counter()
                C.predict(m, x, B)
                times[name, bf].append(time.perf_counter() - t)
        ref = outs["Conv1d", False]
        base = statistics.median(times["Conv1d", False])
        for (name, bf), ts in times.items():
            o = outs[name, bf]
            med = statistics.median(ts)
            n_agree = sum((o[k].argmax(-1) == ref[k].argmax(-1)).sum().item() for k in o)
            agree = n_agree / sum(o[k].argmax(-1).numel() for k in o)
            precision = "bf16" if bf else "fp32"
            print(
                f"batch {B:3d}  {name:21s} {precision}  {1000 * med / B:6.2f} ms/instance  "
                f"speed-up {base / med:5.2f}x  decisions agree {100 * agree:6.2f}%"
            )


if __name__ == "__main__":
    main()
