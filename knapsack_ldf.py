"""0/1 knapsack with the Lagrangian Dual Framework (thesis chapter 3), in one file.

    instances -> exact labels -> model (FC) -> loss (BCE + lambda * violation) -> train -> evaluate

    python knapsack_ldf.py --lr 1e-4 --step 1e-7            # LDF, the thesis' selected setting
    python knapsack_ldf.py --model fc                        # the FC baseline (writes <out>/fc.pt)
    python knapsack_ldf.py --pretrained runs/knapsack/fc/fc.pt   # LDF started from a trained FC
    python knapsack_ldf.py --eval-only runs/knapsack/ldf/ldf.pt  # the table of a saved checkpoint

The violation of an instance is nu = max(0, sum_i xhat_i w_i - W) / W, relative to its capacity W
(see README: the thesis code's raw sum made gradients explode at large capacities).
"""
import argparse
import io
import itertools
import json
import math
import multiprocessing as mp
import os
import sys
import time
import warnings

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

import common

# The solvers see integers: weights ceil(w * 2^30), capacity floor(W * 2^30), values round(v * 2^30).
# w and v are float32 draws, so w * 2^30 is exact for every w >= 2^-6 and the integer problem is the
# float problem (an earlier 1e-6 rounding cut off float-feasible solutions: 0.17 % of labels were
# 0.007 % short of optimal, which the greedy heuristic exposed). Labels are re-checked in floats.
SCALE = 2**30


# ====================================================================== arguments
def items_arg(text):
    n = common.positive_int(text)
    if n < 2:
        raise argparse.ArgumentTypeError(f"--items needs at least 2 items, got {n}")
    return n


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("instances and labels")
    g.add_argument("--items", type=items_arg, default=500, help="items per instance, n (thesis: 500)")
    g.add_argument("--instances", type=common.positive_int, default=30000,
                   help="instances S, split 80/10/10 into train/val/test (thesis: 30000)")
    g.add_argument("--solver", choices=["ortools", "gurobi"], default="ortools",
                   help="exact back end for the labels (gurobi falls back to ortools if its licence is too small)")
    g.add_argument("--workers", type=common.positive_int, default=max(1, os.cpu_count() or 1),
                   help="label-generation worker processes")
    g.add_argument("--data-dir", default="data", help="where instances and labels are cached")
    g = p.add_argument_group("model and training")
    g.add_argument("--model", choices=["fc", "ldf"], default="ldf",
                   help="fc: BCE only; ldf: BCE + lambda * violation (default)")
    g.add_argument("--arch", choices=["fc", "set"], default="fc",
                   help="fc: the thesis network (fixed n); set: permutation-equivariant item scorer (any n)")
    g.add_argument("--supervision", choices=["labels", "none"], default="labels",
                   help="none: no solver labels in training, loss = -objective of the relaxed prediction + "
                        "lambda * its LP violation (needs --model ldf)")
    g.add_argument("--pretrained", metavar="CKPT", help="start from this checkpoint's weights (thesis' pre-trained LDF)")
    g.add_argument("--epochs", type=common.positive_int, default=500, help="maximum epochs (thesis: 500)")
    g.add_argument("--patience", type=common.positive_int, default=20,
                   help="stop after this many epochs without a better selection criterion")
    g.add_argument("--batch-size", type=common.positive_int, default=256)
    g.add_argument("--lr", type=common.positive_float, default=1e-4, help="Adam learning rate")
    g.add_argument("--step", type=common.nonnegative_float, default=1e-7,
                   help="Lagrangian step s of the per-epoch multiplier update (thesis Algorithm 1)")
    g.add_argument("--lambda0", type=common.nonnegative_float, default=1.0, help="initial multiplier")
    g.add_argument("--max-grad-norm", type=common.nonnegative_float, default=1.0,
                   help="clip the gradient norm to this (0: no clipping)")
    g.add_argument("--k", type=common.positive_float, default=25.0, help="sharpness of the rounding surrogate (eq. 13)")
    g.add_argument("--mu", type=common.nonnegative_float, nargs="+", default=[0.0, 10.0, 100.0, 1000.0],
                   help="mu values of the mu-loss (eq. 15: validation BCE summed over items + mu * relative "
                        "violation); one best checkpoint is kept per mu")
    g.add_argument("--select-mu", type=common.nonnegative_float, default=1000.0,
                   help="the mu whose best checkpoint LDF reports (FC reports its best validation AR)")
    g.add_argument("--grid", action="store_true", help="run the Table 1 grid (lr x step x max-grad-norm)")
    g.add_argument("--grid-lr", type=common.positive_float, nargs="+", default=[1e-3, 1e-4, 1e-5])
    g.add_argument("--grid-step", type=common.nonnegative_float, nargs="+", default=[1e-5, 1e-6, 1e-7])
    g.add_argument("--grid-max-grad-norm", type=common.nonnegative_float, nargs="+", default=[0.0, 1.0])
    g = p.add_argument_group("evaluation")
    g.add_argument("--decode", choices=["raw", "repair"], default="raw",
                   help="which decode results.json calls 'test' (tables always show raw, repaired and greedy): "
                        "repair takes the model's items by falling probability while they fit, then fills greedily")
    g.add_argument("--eval-items", type=items_arg, nargs="+", default=[],
                   help="set arch: also evaluate on fresh instances with these n, without retraining")
    g.add_argument("--eval-instances", type=common.positive_int, default=3000, help="instances per --eval-items n")
    g.add_argument("--tradeoff", metavar="DIR", help="plot AR against %% violated for every results.json under DIR, then stop")
    g = p.add_argument_group("running")
    g.add_argument("--seed", type=int, default=0, help="seeds instances, split, initialisation and batches")
    g.add_argument("--out", help="output folder (default runs/knapsack/<model>)")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    g.add_argument("--fresh", action="store_true", help="ignore <out>/last.pt instead of resuming from it")
    g.add_argument("--eval-only", metavar="CKPT", help="evaluate a saved checkpoint on its test split and stop")
    g.add_argument("--labels-only", action="store_true", help="make instances and labels, then stop")
    args = p.parse_args(argv)
    if args.select_mu not in args.mu:
        p.error(f"--select-mu {args.select_mu} must be one of --mu {args.mu}")
    if args.pretrained and not os.path.isfile(args.pretrained):
        p.error(f"--pretrained: no such file {args.pretrained}")
    if args.eval_only and not os.path.isfile(args.eval_only):
        p.error(f"--eval-only: no such file {args.eval_only}")
    if args.supervision == "none" and args.model != "ldf":
        p.error("--supervision none trains on the objective and the constraint only: it needs --model ldf")
    if args.eval_items and args.arch != "set":
        p.error("--eval-items needs --arch set (the fc network has a fixed number of items)")
    if args.pretrained and args.model == "fc":
        p.error("--pretrained trains the LDF model from a checkpoint; drop --model fc")
    if args.out is None:
        args.out = os.path.join("runs", "knapsack", run_name(vars(args)))
    return args


def run_name(cfg):
    """fc, ldf, ldf-pretrained, ldf-labelfree, ldf-set, ... from a config dict."""
    name = cfg["model"] + ("-pretrained" if cfg.get("pretrained") else "")
    name += "-labelfree" if cfg.get("supervision") == "none" else ""
    return name + ("-set" if cfg.get("arch", "fc") == "set" else "")


# ====================================================================== 1. instances
def make_instances(n_items, n_instances, seed):
    """Pisinger's uncorrelated instances: w, v ~ U[0,1]; instance j = 1..S gets capacity
    W_j = j/(S+1) * sum(w), so the capacities sweep the whole range of alpha = W / sum(w)."""
    rng = np.random.default_rng(seed)
    w = rng.random((n_instances, n_items)).astype(np.float32).astype(np.float64)
    v = rng.random((n_instances, n_items)).astype(np.float32).astype(np.float64)
    j = np.arange(1, n_instances + 1)
    capacity = j / (n_instances + 1) * w.sum(1)
    return w, v, capacity


def split(n_instances, seed):
    """Seeded shuffle into 80/10/10 train/val/test index arrays."""
    perm = np.random.default_rng(seed + 1).permutation(n_instances)
    a, b = int(0.8 * n_instances), int(0.9 * n_instances)
    return {"train": np.sort(perm[:a]), "val": np.sort(perm[a:b]), "test": np.sort(perm[b:])}


# ====================================================================== 2. labels
def integer_data(w, v, capacity):
    """Round weights up and the capacity down, so an integer-feasible solution is float-feasible."""
    return (np.ceil(w * SCALE).astype(np.int64), int(np.floor(capacity * SCALE)),
            np.round(v * SCALE).astype(np.int64))


def solve_ortools(w, v, capacity):
    try:
        from ortools.algorithms.python import knapsack_solver
    except ImportError:
        sys.exit("the ortools back end needs OR-Tools: pip install ortools")
    wi, cap, vi = integer_data(w, v, capacity)
    solver = knapsack_solver.KnapsackSolver(
        knapsack_solver.SolverType.KNAPSACK_MULTIDIMENSION_BRANCH_AND_BOUND_SOLVER, "labels")
    solver.init(vi.tolist(), [wi.tolist()], [cap])
    solver.solve()
    if not solver.is_solution_optimal():
        raise RuntimeError("OR-Tools did not prove optimality")
    return np.array([solver.best_solution_contains(i) for i in range(len(w))], dtype=np.uint8)


def solve_gurobi(w, v, capacity):
    import gurobipy as gp
    wi, cap, vi = integer_data(w, v, capacity)
    with gp.Env(empty=True) as env:
        env.setParam("OutputFlag", 0)
        env.start()
        with gp.Model(env=env) as m:
            m.Params.MIPGap, m.Params.Threads, m.Params.IntFeasTol = 0.0, 1, 1e-9
            x = m.addMVar(len(w), vtype=gp.GRB.BINARY)
            m.addConstr(wi.astype(np.float64) @ x <= cap)
            m.setObjective(vi.astype(np.float64) @ x, gp.GRB.MAXIMIZE)
            m.optimize()
            if m.Status != gp.GRB.OPTIMAL:
                raise RuntimeError(f"Gurobi status {m.Status}")
            return (x.X > 0.5).astype(np.uint8)


def gurobi_usable(n_items):
    """True when gurobipy is installed and its licence admits an n-item knapsack; else say why."""
    try:
        import gurobipy as gp
    except ImportError:
        print("gurobipy is not installed (pip install gurobipy); falling back to OR-Tools", file=sys.stderr)
        return False
    try:
        solve_gurobi(np.full(n_items, 0.5), np.full(n_items, 0.5), 1.0)
        return True
    except gp.GurobiError as e:
        print(f"Gurobi cannot solve an {n_items}-item model here ({e}); "
              "the pip licence admits at most 2000 variables; falling back to OR-Tools", file=sys.stderr)
        return False


def solve_chunk(job):
    """Worker: solve instances [lo, hi) and return their labels and seconds per instance."""
    solver, w, v, capacity = job
    solve = solve_gurobi if solver == "gurobi" else solve_ortools
    x = np.zeros(w.shape, dtype=np.uint8)
    seconds = np.zeros(len(w))
    for i in range(len(w)):
        t = time.perf_counter()
        x[i] = solve(w[i], v[i], capacity[i])
        seconds[i] = time.perf_counter() - t
    return x, seconds


def make_labels(w, v, capacity, folder, solver, workers, chunk=500):
    """Exact labels, solved in chunks by worker processes; each chunk is written atomically, so an
    interrupted run resumes where it stopped. Returns x (S, n), optimal values, seconds per instance."""
    os.makedirs(folder, exist_ok=True)
    chunks = [(lo, min(lo + chunk, len(w))) for lo in range(0, len(w), chunk)]
    path = lambda lo: os.path.join(folder, f"chunk_{lo:07d}.npz")
    todo = [(lo, hi) for lo, hi in chunks if not os.path.exists(path(lo))]
    if todo:
        jobs = [(solver, w[lo:hi], v[lo:hi], capacity[lo:hi]) for lo, hi in todo]
        with mp.get_context("spawn").Pool(min(workers, len(todo))) as pool, \
                tqdm(total=sum(hi - lo for lo, hi in todo), desc=f"labels ({solver})", unit="inst") as bar:
            for (lo, hi), (x, seconds) in zip(todo, pool.imap(solve_chunk, jobs)):
                buf = io.BytesIO()
                np.savez(buf, x=x, seconds=seconds)
                common.atomic_write_bytes(path(lo), buf.getvalue())
                bar.update(hi - lo)
    parts = [np.load(path(lo)) for lo, _ in chunks]
    x = np.concatenate([p["x"] for p in parts]).astype(np.float64)
    seconds = np.concatenate([p["seconds"] for p in parts])
    load = (x * w).sum(1)
    bad = np.nonzero(load > capacity)[0]
    if len(bad):
        raise RuntimeError(f"labels in {folder} violate the capacity of instances {bad[:5]}; delete the folder")
    return x, (x * v).sum(1), seconds


def load_data(args, n_items=None, n_instances=None, seed=None):
    """Instances, split and labels for these flags, from the cache in --data-dir when present."""
    n_items, n_instances = n_items or args.items, n_instances or args.instances
    seed = args.seed if seed is None else seed
    w, v, capacity = make_instances(n_items, n_instances, seed)
    solver = args.solver
    if solver == "gurobi" and not gurobi_usable(n_items):
        solver = "ortools"
    folder = os.path.join(args.data_dir, "knapsack", f"n{n_items}_S{n_instances}_seed{seed}", f"labels_{solver}_scale2^30")
    parts = split(n_instances, seed)
    t = time.perf_counter()
    if getattr(args, "supervision", "labels") == "none" and not os.path.isdir(folder):
        # label-free training: solve only the validation and test instances, for evaluation
        rows = np.concatenate([parts["val"], parts["test"]])
        x, opt, seconds = np.full(w.shape, np.nan), np.full(len(w), np.nan), np.full(len(w), np.nan)
        x[rows], opt[rows], seconds[rows] = make_labels(w[rows], v[rows], capacity[rows], folder + "_valtest",
                                                        solver, args.workers)
    else:
        x, opt, seconds = make_labels(w, v, capacity, folder, solver, args.workers)
    return {"w": w, "v": v, "capacity": capacity, "x": x, "opt": opt, "solve_seconds": seconds,
            "solver": solver, "label_wall_seconds": time.perf_counter() - t, "split": parts}


# ====================================================================== 3. model
class SetModel(nn.Module):
    """Permutation-equivariant scorer (beyond the thesis): every item is scored by one shared MLP from
    its own scale-free features and the instance's context (alpha = W/sum(w), pooled item embeddings),
    so permuting the items permutes the logits and one model serves any n. One item feature is the
    share of the capacity taken by the items with a better value/weight ratio (a sort, so equivariant)."""

    def __init__(self, hidden=64):
        super().__init__()
        self.item = nn.Sequential(nn.Linear(6, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.score = nn.Sequential(nn.Linear(2 * hidden + 1, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                   nn.Linear(hidden, 1))

    def forward(self, raw):
        n = (raw.shape[1] - 1) // 2
        w, v, capacity = raw[:, :n], raw[:, n:2 * n], raw[:, 2 * n:]
        ratio = v / w.clamp_min(1e-9)
        order = torch.argsort(ratio, dim=1, descending=True)
        better = torch.cumsum(torch.gather(w, 1, order), 1) - torch.gather(w, 1, order)
        better = torch.empty_like(better).scatter_(1, order, better) / capacity
        alpha = capacity / w.sum(1, keepdim=True)
        f = torch.stack([w * n / w.sum(1, keepdim=True), v * n / v.sum(1, keepdim=True), torch.log(ratio.clamp_min(1e-9)),
                         w / capacity, better, better + w / capacity], -1)
        h = self.item(f)
        context = torch.cat([h.mean(1, keepdim=True), alpha[:, :, None]], -1).expand(-1, n, -1)
        return self.score(torch.cat([h, context], -1)).squeeze(-1)


def make_model(n_items, arch="fc"):
    """The thesis' FC network: [w, v, W] (2n+1) -> 2048 -> 1024 -> n logits, ReLU then batch norm."""
    if arch == "set":
        return SetModel()
    return nn.Sequential(nn.Linear(2 * n_items + 1, 2048), nn.ReLU(), nn.BatchNorm1d(2048),
                         nn.Linear(2048, 1024), nn.ReLU(), nn.BatchNorm1d(1024),
                         nn.Linear(1024, n_items))


def features(data):
    """Raw inputs [w, v, W] as one float32 tensor (S, 2n+1)."""
    return torch.from_numpy(np.concatenate([data["w"], data["v"], data["capacity"][:, None]], 1)).float()


def normaliser(raw, n_items, arch="fc"):
    """Mean and std per input group (weights, values, capacity), from the training rows only (the
    set model builds scale-free features itself and gets the raw inputs)."""
    if arch == "set":
        return {"mean": torch.zeros(()), "std": torch.ones(())}
    groups = [slice(0, n_items), slice(n_items, 2 * n_items), slice(2 * n_items, 2 * n_items + 1)]
    mean, std = torch.empty(raw.shape[1]), torch.empty(raw.shape[1])
    for g in groups:
        mean[g], std[g] = raw[:, g].mean(), raw[:, g].std().clamp_min(1e-12)
    return {"mean": mean, "std": std}


# ====================================================================== 4. loss
def violation(x, w, capacity):
    """nu = max(0, sum_i x_i w_i - W) / W per instance (relative to the capacity)."""
    return torch.relu((x * w).sum(-1) - capacity) / capacity


def batch_loss(logits, y, w, capacity, multiplier, k, ldf, v=None):
    """BCE on the labels, plus for LDF lambda * mean violation of the surrogate-rounded prediction.
    Label-free (y is None): the negated objective of the relaxed prediction p = sigmoid(logits), as a
    share of the instance's total value, plus lambda * the LP violation of p."""
    if y is None:
        p = torch.sigmoid(logits)
        objective = -((p * v).sum(-1) / v.sum(-1)).mean()
        constraint = multiplier * violation(p, w, capacity).mean()
        return objective + constraint, objective, constraint
    label = F.binary_cross_entropy_with_logits(logits, y)
    if not ldf:
        return label, label, torch.zeros(())
    nu = violation(common.round_surrogate(torch.sigmoid(logits), k), w, capacity)
    constraint = multiplier * nu.mean()
    return label + constraint, label, constraint


# ====================================================================== 5. train
@torch.no_grad()
def predict(model, x_norm, batch=4096):
    model.eval()
    return torch.cat([model(x_norm[i:i + batch]) for i in range(0, len(x_norm), batch)])


def train(args, data, out):
    device = common.pick_device(args.device)
    n = data["w"].shape[1]
    ldf, supervised = args.model == "ldf", args.supervision == "labels"
    raw = features(data)
    idx = data["split"]
    pretrained = torch.load(args.pretrained, weights_only=False) if args.pretrained else None
    norm = pretrained["norm"] if pretrained else normaliser(raw[idx["train"]], n, args.arch)
    x_norm = (raw - norm["mean"]) / norm["std"]
    y = torch.from_numpy(data["x"]).float()
    w, v, capacity = raw[:, :n], raw[:, n:2 * n], raw[:, 2 * n]
    tr, va = torch.from_numpy(idx["train"]), torch.from_numpy(idx["val"])

    common.set_seed(args.seed)
    model = make_model(n, args.arch).to(device)
    if pretrained:
        model.load_state_dict(pretrained["model"])
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    config = dict(vars(args))
    state = {"epoch": 0, "multiplier": args.lambda0 if ldf else 0.0, "history": [], "best": {},
             "since_best": 0, "train_seconds": 0.0}
    last = os.path.join(out, "last.pt")
    if os.path.exists(last) and not args.fresh:
        ck = torch.load(last, weights_only=False)
        mismatch = {k for k in config if k not in RESUME_FREE and ck["config"].get(k, config[k]) != config[k]}
        if mismatch:
            sys.exit(f"{last} was trained with other {sorted(mismatch)}: pass --fresh to start over or pick another --out")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        state = ck["state"]
        print(f"resuming from {last} at epoch {state['epoch']} (multiplier {state['multiplier']:.4g})")

    def checkpoint(name, **extra):
        common.atomic_torch_save({"model": model.state_dict(), "norm": norm, "config": config, "n_items": n,
                                  "epoch": state["epoch"], "multiplier": state["multiplier"], **extra},
                                 os.path.join(out, name))

    w_tr, v_tr, c_tr = w[tr].to(device), v[tr].to(device), capacity[tr].to(device)
    xn_tr, y_tr = x_norm[tr].to(device), y[tr].to(device) if supervised else None
    stop_reason = "epochs"
    bar = tqdm(range(state["epoch"], args.epochs), desc=f"train {args.model}", unit="epoch", initial=state["epoch"],
               total=args.epochs)
    for epoch in bar:
        t0 = time.perf_counter()
        model.train()
        g = torch.Generator().manual_seed(args.seed * 100003 + epoch)
        perm = torch.randperm(len(tr), generator=g)
        sums = np.zeros(3)
        bad = False
        for b in range(0, len(perm), args.batch_size):
            i = perm[b:b + args.batch_size].to(device)
            if len(i) < 2:
                continue      # batch norm needs two rows
            loss, label, constraint = batch_loss(model(xn_tr[i]), y_tr[i] if supervised else None, w_tr[i], c_tr[i],
                                                 state["multiplier"], args.k, ldf, v_tr[i])
            if not torch.isfinite(loss):
                bad = True
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if args.max_grad_norm > 0:
                nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            opt.step()
            sums += [loss.item() * len(i), label.item() * len(i), constraint.item() * len(i)]
        if bad:
            stop_reason = "nan"
            print(f"\nthe loss became {loss.item()} in epoch {epoch}: training stopped; the last good checkpoint "
                  f"is {last} (epoch {state['epoch']}). Lower --lr or --step, or set --max-grad-norm.", file=sys.stderr)
            break
        # validation: AR, violation, mu-losses
        val = evaluate_split(model, x_norm[va].to(device), data, idx["val"])
        if supervised:   # label loss summed over items, as the thesis
            label_val = F.binary_cross_entropy_with_logits(val["logits"], y[va].to(device), reduction="none").sum(1)
            label_val = label_val.cpu().numpy()
        else:            # label-free selection: the negated objective share of the rounded prediction
            label_val = -val["obj"] / data["v"][idx["val"]].sum(1)
        mu_losses = {mu: common.mu_loss(label_val, val["nu"], mu) for mu in args.mu}
        # multiplier: subgradient step on the hard-rounded violations of the whole training set
        if ldf:
            xhat = (predict(model, xn_tr) > 0).float()
            state["multiplier"] = common.subgradient_step(state["multiplier"], args.step,
                                                          violation(xhat, w_tr, c_tr).sum().item())
        state["epoch"] = epoch + 1
        state["train_seconds"] += time.perf_counter() - t0
        row = {"epoch": epoch + 1, "loss": sums[0] / len(tr), "label_loss": sums[1] / len(tr),
               "constraint_loss": sums[2] / len(tr), "val_ar": float(val["ar"].mean()),
               "val_violated": float((val["nu"] > 0).mean()), "multiplier": state["multiplier"],
               **{f"val_mu_loss_{mu:g}": l for mu, l in mu_losses.items()}}
        state["history"].append(row)
        improved = []
        for name, value in [("ar", row["val_ar"])] * supervised + [(f"mu{mu:g}", l) for mu, l in mu_losses.items()]:
            if value < state["best"].get(name, (math.inf,))[0]:
                state["best"][name] = (value, epoch + 1)
                checkpoint(f"best_{name}.pt", selected_by=name, value=value)
                improved.append(name)
        state["since_best"] = 0 if improved else state["since_best"] + 1
        checkpoint("last.pt", optimizer=opt.state_dict(), state=state)
        bar.set_postfix(ar=f"{row['val_ar']:.4f}", viol=f"{row['val_violated']:.1%}", lam=f"{state['multiplier']:.4g}")
        if state["since_best"] >= args.patience:
            stop_reason = "patience"
            break
    bar.close()
    return state, stop_reason


RESUME_FREE = {"epochs", "patience", "out", "device", "workers", "fresh", "eval_only", "labels_only", "grid",
               "grid_lr", "grid_step", "grid_max_grad_norm", "data_dir", "decode", "eval_items", "eval_instances",
               "tradeoff"}


# ====================================================================== 6. evaluate
def solution_metrics(xhat, data, rows):
    """Objective, relative violation and AR (eq. 14) of 0/1 solutions xhat for instances `rows`."""
    w, v, capacity, opt = data["w"][rows], data["v"][rows], data["capacity"][rows], data["opt"][rows]
    obj = (xhat * v).sum(1)
    nu = np.maximum(0.0, (xhat * w).sum(1) - capacity) / capacity
    return {"obj": obj, "nu": nu, "ar": common.approximation_ratio(obj, opt), "opt": opt}


def evaluate_split(model, x_norm_rows, data, rows):
    logits = predict(model, x_norm_rows)
    xhat = (logits > 0).double().cpu().numpy()       # round(sigmoid(logit)) without the sigmoid
    return {"logits": logits, "xhat": xhat, **solution_metrics(xhat, data, rows)}


def fill_in_order(w, remaining, x, order, eligible):
    """Scan each instance's items in `order`; take every eligible item that still fits."""
    rows = np.arange(len(w))
    for pos in range(w.shape[1]):
        item = order[:, pos]
        wi = w[rows, item]
        take = eligible[rows, item] & (wi <= remaining)
        x[rows[take], item[take]] = 1.0
        remaining = remaining - take * wi
    return x, remaining


def greedy(w, v, capacity):
    """Value/weight greedy: scan items by falling v/w and take each one that still fits."""
    return fill_in_order(w, capacity.copy(), np.zeros_like(w), np.argsort(-v / w, axis=1, kind="stable"),
                         np.ones(w.shape, dtype=bool))[0]


def repair(prob, w, v, capacity):
    """Repair decoding (beyond the thesis): the items the model picks (p > 0.5), by falling p, while
    they fit; then the rest of the capacity greedily by v/w. Always feasible, and a superset of a
    feasible raw prediction (so never a lower objective)."""
    x, remaining = fill_in_order(w, capacity.copy(), np.zeros_like(w), np.argsort(-prob, axis=1, kind="stable"),
                                 prob > 0.5)
    return fill_in_order(w, remaining, x, np.argsort(-v / w, axis=1, kind="stable"), x == 0)[0]


def summarise(m, mask):
    """One table row (thesis Tables 2-4) over the instances in mask."""
    obj, opt, nu, ar = m["obj"][mask], m["opt"][mask], m["nu"][mask], m["ar"][mask]
    viol = 100 * nu[nu > 0]
    if len(viol) > 1:   # the thesis ignored violations more than 6 sigma from the mean
        viol = viol[np.abs(viol - viol.mean()) <= 6 * viol.std()]
    under, over = obj < opt - 1e-9, obj > opt + 1e-9
    rel = lambda sel: float(np.mean(100 * np.abs(obj[sel] - opt[sel]) / opt[sel])) if sel.any() else 0.0
    return {"n": int(mask.sum()), "pct_violated": 100 * float((nu > 0).mean()),
            "mean_violation_pct_of_W": float(viol.mean()) if len(viol) else 0.0,
            "pct_under": 100 * float(under.mean()), "pct_over": 100 * float(over.mean()),
            "avg_under_pct": rel(under), "avg_over_pct": rel(over), "ar": float(ar.mean())}


def table(m, alpha):
    quintiles = [summarise(m, (alpha >= q / 5) & (alpha < (q + 1) / 5 if q < 4 else alpha <= 1)) for q in range(5)]
    return {"all": summarise(m, np.ones_like(alpha, dtype=bool)), "quintiles": quintiles}


def markdown(rows):
    """rows: list of (name, table). One Markdown table, quintile rows then overall, per model."""
    head = "| model | alpha = W/sum(w) | n | % violated | mean violation (% of W) | % under | % over | Avg-U % | Avg-O % | AR |"
    lines = [head, "|" + "---|" * 10]
    for name, t in rows:
        for label, r in [(f"{q / 5:.1f}-{(q + 1) / 5:.1f}", t["quintiles"][q]) for q in range(5)] + [("all", t["all"])]:
            lines.append(f"| {name} | {label} | {r['n']} | {r['pct_violated']:.2f} | {r['mean_violation_pct_of_W']:.3f} | "
                         f"{r['pct_under']:.2f} | {r['pct_over']:.2f} | {r['avg_under_pct']:.3f} | "
                         f"{r['avg_over_pct']:.3f} | {r['ar']:.5f} |")
    return "\n".join(lines)


def load_model(ckpt_path):
    ck = torch.load(ckpt_path, weights_only=False)
    model = make_model(ck["n_items"], ck["config"].get("arch", "fc"))
    model.load_state_dict(ck["model"])
    return model, ck


def test_tables(model, ck, data, rows):
    """Raw, repaired and greedy tables of one model on instances `rows`, and the times per instance."""
    x_norm = (features(data)[rows] - ck["norm"]["mean"]) / ck["norm"]["std"]
    w, v, capacity = data["w"][rows], data["v"][rows], data["capacity"][rows]
    alpha = capacity / w.sum(1)
    t = time.perf_counter()
    net = evaluate_split(model, x_norm, data, rows)
    net_ms = 1000 * (time.perf_counter() - t) / len(rows)
    t = time.perf_counter()
    xr = repair(torch.sigmoid(net["logits"]).double().numpy(), w, v, capacity)
    repair_ms = net_ms + 1000 * (time.perf_counter() - t) / len(rows)
    t = time.perf_counter()
    xg = greedy(w, v, capacity)
    greedy_ms = 1000 * (time.perf_counter() - t) / len(rows)
    return {"test_raw": table(net, alpha), "test_repair": table(solution_metrics(xr, data, rows), alpha),
            "greedy": table(solution_metrics(xg, data, rows), alpha),
            "times": {"solver": data["solver"], "solver_ms_per_instance": 1000 * float(data["solve_seconds"][rows].mean()),
                      "network_ms_per_instance": net_ms, "repair_ms_per_instance": repair_ms,
                      "greedy_ms_per_instance": greedy_ms}}


def print_tables(title, name, r):
    md = markdown([(name, r["test_raw"]), (name + " repaired", r["test_repair"]), ("greedy v/w", r["greedy"])])
    tm = r["times"]
    print(f"\n## {title}\n\n{md}\n\nper instance: exact {tm['solver']} {tm['solver_ms_per_instance']:.3f} ms | "
          f"network {tm['network_ms_per_instance']:.4f} ms (batched, CPU) | with repair {tm['repair_ms_per_instance']:.4f} ms"
          f" | greedy {tm['greedy_ms_per_instance']:.4f} ms")
    return md


def report(ckpt_path, data, out, extra=None, decode="raw", eval_data=()):
    """Test-split tables of a checkpoint (raw and repaired) beside greedy, printed as Markdown and
    written to results.json; eval_data: more (n, data) to evaluate on without retraining."""
    model, ck = load_model(ckpt_path)
    name = run_name(ck["config"])
    rows = data["split"]["test"]
    r = test_tables(model, ck, data, rows)
    results = {"model": name, "checkpoint": os.path.abspath(ckpt_path), "epoch": ck["epoch"],
               "selected_by": ck.get("selected_by"), "config": ck["config"], "decode": decode,
               "test": r["test_" + decode], **r, **(extra or {})}
    md = print_tables(f"Test split ({len(rows)} instances, n={ck['n_items']}): {name} from {ckpt_path} "
                      f"(epoch {ck['epoch']}, selected by {ck.get('selected_by')})", name, r)
    for n, d in eval_data:
        every = np.arange(len(d["w"]))
        results.setdefault("other_n", {})[str(n)] = e = test_tables(model, ck, d, every)
        md += "\n\n" + print_tables(f"n={n} ({len(every)} fresh instances, no retraining)", name, e)
    common.atomic_write_json(os.path.join(out, "results.json"), results)
    common.atomic_write_bytes(os.path.join(out, "results.md"), (md + "\n").encode())
    return results


def plots(history, out, k):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    p = torch.linspace(0, 1, 401)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for kk in sorted({5.0, 10.0, 25.0, 50.0, float(k)}):
        ax.plot(p, common.sigmoid_slope(p, 0.5, kk), label=f"k={kk:g}")
    ax.set(xlabel="sigmoid(logit)", ylabel="surrogate d round / dp", title="Figure 1: rounding surrogate (eq. 13)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out, "fig1_surrogate.png"), dpi=120)
    plt.close(fig)
    if not history:
        return
    ep = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.5))
    for ax, keys, title in zip(axes, [("loss", "label_loss", "constraint_loss"), ("val_ar",), ("val_violated",),
                                      ("multiplier",)], ["training loss", "validation AR", "validation violated", "lambda"]):
        for key in keys:
            ax.plot(ep, [h[key] for h in history], label=key)
        ax.set(title=title, xlabel="epoch")
        if len(keys) > 1:
            ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out, "training_curves.png"), dpi=120)
    plt.close(fig)


def selected_checkpoint(args, out):
    return os.path.join(out, "best_ar.pt" if args.model == "fc" else f"best_mu{args.select_mu:g}.pt")


def tradeoff(folder):
    """Beyond the thesis: AR against % violated of every run under folder, raw and repaired."""
    import glob
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    runs = [json.load(open(f)) for f in sorted(glob.glob(os.path.join(folder, "**", "results.json"), recursive=True))]
    if not runs:
        sys.exit(f"--tradeoff: no results.json under {folder}")
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for decode, marker in [("raw", "o"), ("repair", "s")]:
        pts = [(r["test_" + decode]["all"]["pct_violated"], r["test_" + decode]["all"]["ar"], r["model"], r["config"])
               for r in runs if "test_" + decode in r]
        ax.scatter([p[0] for p in pts], [p[1] - 1 for p in pts], marker=marker, label=decode)
        for x, y, name, cfg in pts:
            ax.annotate(f"{name} s={cfg['step']:g}", (x, y - 1), fontsize=6)
    g = runs[0]["greedy"]["all"]
    ax.scatter([g["pct_violated"]], [g["ar"] - 1], marker="*", s=120, label="greedy v/w")
    ax.set(xlabel="% of test instances violated", ylabel="mean AR - 1 (eq. 14), log scale", yscale="log",
           title="optimality-feasibility trade-off")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(folder, "tradeoff.png"), dpi=130)
    print(f"wrote {os.path.join(folder, 'tradeoff.png')} from {len(runs)} runs")


def run(args, data):
    """Train one model, keep its selected checkpoint as <out>/<model>.pt, report and plot."""
    os.makedirs(args.out, exist_ok=True)
    state, reason = train(args, data, args.out)
    best = selected_checkpoint(args, args.out)
    if not os.path.exists(best):
        sys.exit(f"no checkpoint was saved in {args.out} (stopped: {reason})")
    final = os.path.join(args.out, f"{args.model}.pt")
    common.atomic_write_bytes(final, open(best, "rb").read())
    plots(state["history"], args.out, args.k)
    extra = {"stopped": reason, "epochs_run": state["epoch"], "train_seconds": state["train_seconds"],
             "label_wall_seconds": data["label_wall_seconds"], "history": state["history"]}
    labelled = argparse.Namespace(**{**vars(args), "supervision": "labels"})
    eval_data = [(n, load_data(labelled, n_items=n, n_instances=args.eval_instances, seed=args.seed + 7))
                 for n in args.eval_items]
    results = report(final, data, args.out, extra, args.decode, eval_data)
    print(f"\ntraining: {state['epoch']} epochs in {state['train_seconds'] / 60:.1f} min (stopped: {reason}); "
          f"checkpoint {final}; plots and results.json in {args.out}")
    return results


def grid(args, data):
    """Thesis Table 1: every lr x step x max-grad-norm, each selected on validation, one table."""
    steps = args.grid_step if args.model == "ldf" else [args.step]
    rows = []
    for lr, step, gn in itertools.product(args.grid_lr, steps, args.grid_max_grad_norm):
        sub = argparse.Namespace(**{**vars(args), "lr": lr, "step": step, "max_grad_norm": gn,
                                    "out": os.path.join(args.out, f"lr{lr:g}_step{step:g}_gn{gn:g}")})
        print(f"\n=== grid: lr {lr:g}, step {step:g}, max grad norm {gn:g}")
        r = run(sub, data)
        key = "ar" if args.model == "fc" else f"mu{args.select_mu:g}"
        ck = torch.load(selected_checkpoint(sub, sub.out), weights_only=False)
        rows.append({"lr": lr, "step": step, "max_grad_norm": gn, "selected_by": key, "val_value": ck["value"],
                     "test_ar": r["test"]["all"]["ar"], "test_pct_violated": r["test"]["all"]["pct_violated"]})
    rows.sort(key=lambda r: r["val_value"])
    lines = ["| lr | step | max grad norm | validation criterion | value | test AR | test % violated |", "|---" * 7 + "|"]
    lines += [f"| {r['lr']:g} | {r['step']:g} | {r['max_grad_norm']:g} | {r['selected_by']} | {r['val_value']:.5f} | "
              f"{r['test_ar']:.5f} | {r['test_pct_violated']:.2f} |" for r in rows]
    print("\n## Grid (best first)\n\n" + "\n".join(lines))
    common.atomic_write_json(os.path.join(args.out, "grid.json"), rows)
    common.atomic_write_bytes(os.path.join(args.out, "grid.md"), ("\n".join(lines) + "\n").encode())


def main(argv=None):
    args = parse_args(argv)
    if args.eval_only:
        cfg = torch.load(args.eval_only, weights_only=False)["config"]
        data = load_data(argparse.Namespace(**{**cfg, "data_dir": args.data_dir, "workers": args.workers}))
        report(args.eval_only, data, os.path.dirname(os.path.abspath(args.eval_only)), decode=args.decode)
        return
    if args.tradeoff:
        return tradeoff(args.tradeoff)
    data = load_data(args)
    print(f"{args.instances} instances, n={args.items}: labels by {data['solver']}, "
          f"{1000 * data['solve_seconds'].mean():.3f} ms per instance (one core), "
          f"{data['label_wall_seconds']:.1f} s wall with {args.workers} workers (0 when cached)")
    if args.labels_only:
        return
    grid(args, data) if args.grid else run(args, data)


if __name__ == "__main__":
    main()
