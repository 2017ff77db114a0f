"""Training-step time of the CSP network (thesis 4.3) with its 72 task heads as grouped matrix
products (csp_ldf.CSPNet: one matmul, one bmm, one bmm per output size) against the same heads as
72 modules called in a Python loop (as the thesis code: concatenate the head's features,
Linear-BN-ReLU x2, Linear).

    python bench/csp_heads.py              # small_0 sizes, batch 16, 1 thread, full widths
    python bench/csp_heads.py --batch 8 --reps 5 --threads 2

Both models have the same parameters and the same function. Rows: 'heads' = the heads alone
(forward, backward on the mixer output, fused Adam step over the head parameters); 'step' = a whole
training step (conv, mixer, heads, cross-entropy + LDF battery term, backward, gradient clipping,
Adam). Times are medians over --reps, the two variants alternating within a rep so that a busy
machine slows both alike.
"""

import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import csp_ldf as C  # noqa: E402


class LoopNet(C.CSPNet):
    """CSPNet with one nn.Sequential per head, called one after another."""

    def __init__(self, inst, T, **arch):
        super().__init__(inst, T, **arch)
        n_in = self.w1.in_features
        nf = self.feats.shape[1]
        w1, w2 = arch["head"]
        del self.w1, self.w1f, self.w2, self.b2, self.bn1, self.bn2, self.w3, self.b3
        heads = []
        for n_of_kind, out in self.groups:
            for _ in range(n_of_kind):
                first = [nn.Linear(n_in + nf, w1), nn.BatchNorm1d(w1), nn.ReLU()]
                second = [nn.Linear(w1, w2), nn.BatchNorm1d(w2), nn.ReLU()]
                heads.append(nn.Sequential(*first, *second, nn.Linear(w2, out)))
        self.heads = nn.ModuleList(heads)

    def forward(self, x):
        z = self.trunk(x)
        outs = []
        for head, features in zip(self.heads, self.feats, strict=True):
            outs.append(head(torch.cat([z, features.expand(len(z), -1)], 1)))
        logits = []  # per kind: (B, heads of that kind, options)
        first = 0
        for n_of_kind, _ in self.groups:
            logits.append(torch.stack(outs[first : first + n_of_kind], 1))
            first += n_of_kind
        recurring, oneoff, battery = logits
        return {
            "recurring_start": recurring.masked_fill(~self.mask_rec, C.NEG),
            "oneoff_start": oneoff.masked_fill(~self.mask_one, C.NEG),
            "battery_state": battery.reshape(len(z), battery.shape[1], -1, C.N_BATTERY_STATES),
        }


def step(model, opt, x, y, inst, heads_only):
    out = model(x)
    loss = sum(F.cross_entropy(out[k].flatten(0, -2), y[k].flatten()) for k in C.DECISION_KEYS)
    if not heads_only:
        loss = loss + 1e-3 * C.battery_violation(out["battery_state"], inst).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--instance", default="phase2_instance_small_0")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--head", type=C.int_list, default=(512, 256))
    p.add_argument("--mixer", type=C.int_list, default=(2048, 1024))
    p.add_argument(
        "--fused",
        type=int,
        default=1,
        help="fused Adam (1, as csp_ldf.py) or the for-loop Adam (0)",
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    inst = C.read_instance(C.find_data_dir() / "instances" / f"{args.instance}.txt")
    T = C.NOVEMBER_DAYS * C.DAY
    B = args.batch
    arch = dict(conv=(64, 128, 64), kernels=(8, 5, 3), pool=32, mixer=args.mixer, head=args.head)
    torch.manual_seed(0)
    models = {"batched": C.CSPNet(inst, T, **arch), "loop": LoopNet(inst, T, **arch)}
    n_heads = sum(k for k, _ in models["batched"].groups)
    allowed_option = models["batched"].mask_rec.float().argmax(1)  # of each recurring class
    y = {
        "recurring_start": allowed_option.expand(B, -1),
        "oneoff_start": torch.full((B, inst["n_oneoff"]), T),
        "battery_state": torch.randint(0, C.N_BATTERY_STATES, (B, len(inst["cap"]), T)),
    }
    print(
        f"{args.instance}: {n_heads} heads {args.head}, batch {B}, {args.threads} thread(s), "
        f"torch {torch.__version__}"
    )
    n_parameters = {name: sum(q.numel() for q in m.parameters()) for name, m in models.items()}
    print(
        f"parameters: batched {n_parameters['batched'] / 1e6:.1f} M, "
        f"loop {n_parameters['loop'] / 1e6:.1f} M"
    )
    for what in ("step", "heads"):
        heads_only = what == "heads"
        if heads_only:  # the input stands for a mixer output
            x = torch.randn(B, args.mixer[-1], 1)
        else:
            x = torch.randn(B, len(C.INPUT_SERIES), T)
        runs = {}
        for name, m in models.items():
            if heads_only:
                # trunk: (B, w, 1) -> (B, w, 1, 1) -> (B, w)
                m.features = nn.Flatten()
                m.mixer = nn.Identity()
            runs[name] = (m, torch.optim.Adam(m.parameters(), 1e-3, fused=args.fused), [])
            step(m, runs[name][1], x, y, inst, heads_only)  # warm-up
        for _ in range(args.reps):
            for m, opt, times in runs.values():
                t = time.perf_counter()
                step(m, opt, x, y, inst, heads_only)
                times.append(time.perf_counter() - t)
        med = {name: statistics.median(r[2]) for name, r in runs.items()}
        print(
            f"{what:5s}: batched {1000 * med['batched']:8.1f} ms   "
            f"per-head loop {1000 * med['loop']:8.1f} ms   "
            f"speed-up {med['loop'] / med['batched']:.2f}x"
        )


if __name__ == "__main__":
    main()
