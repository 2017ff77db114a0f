"""What knapsack_ldf.py and csp_ldf.py share, and nothing else.

The thesis' vocabulary: a *surrogate* gradient stands in for the zero gradient of rounding (or of a
one-hot argmax); the *violation* nu of a constraint is relaxed into the loss with a Lagrange
*multiplier* lambda, which a *subgradient step* raises once per epoch; models are selected by the
approximation ratio (AR) or by the *mu-loss* (label loss + mu * violation).
"""

import argparse
import contextlib
import json
import math
import os
import random
import sys
import tempfile
import time

import numpy as np
import torch

from csrc.ops import onehot_surrogate as onehot_surrogate
from csrc.ops import onehot_surrogate_torch as onehot_surrogate_torch
from csrc.ops import sigmoid_slope


# ---------------------------------------------------------------- reproducibility and files
def set_seed(seed):
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(name="auto"):
    """'auto' -> cuda when available, else cpu; anything else is passed to torch.device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


TEMPORARY_PREFIX = ".tmp-"  # atomic writes go through <folder>/.tmp-*, renamed when complete


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def remove_stale_temporaries(folder):
    """Delete what killed atomic writes left in `folder` (a later run calls this on start, under
    the folder's lock, so no live write is touched)."""
    if not os.path.isdir(folder):
        return
    for name in os.listdir(folder):
        if name.startswith(TEMPORARY_PREFIX):
            try:
                os.remove(os.path.join(folder, name))
            except FileNotFoundError:
                pass


@contextlib.contextmanager
def folder_lock(folder, what="this folder"):
    """Hold an exclusive lock on `folder` (a .lock file in it) for the block: a second run on the
    same folder waits, saying so, instead of doing the same work twice. The lock goes with the
    process, so a killed run never leaves the folder locked."""
    import fcntl

    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, ".lock"), "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another run that is using {what} ({folder})", file=sys.stderr)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def set_threads(threads=None):
    """torch's intra-op threads: `threads`, else the cores this process may run on."""
    if threads is None:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    if threads:
        torch.set_num_threads(threads)


# ---------------------------------------------------------------- distributed work (Dask)
SCHEDULER_VARIABLE = "LDF_DASK_SCHEDULER"  # a running Dask scheduler's address, like --cluster
CONNECT_SECONDS = 30


@contextlib.contextmanager
def dask_client(workers, cluster=None):
    """A dask.distributed Client for the block: to the running scheduler at `cluster` (or at
    $LDF_DASK_SCHEDULER), else to a local cluster of `workers` single-threaded processes started
    here and stopped after the block (no set-up). A local worker that dies is restarted and its
    tasks run again."""
    import logging

    from dask.distributed import Client, LocalCluster

    address = cluster or os.environ.get(SCHEDULER_VARIABLE)
    if address:
        try:
            client = Client(address, timeout=CONNECT_SECONDS)
        except (OSError, TimeoutError) as err:
            raise SystemExit(
                f"--cluster {address}: no Dask scheduler answered within {CONNECT_SECONDS} s "
                f"({err})"
            ) from None
        with client:
            yield client
        return
    local = LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",  # any free port
        silence_logs=logging.ERROR,
    )
    with local, Client(local) as client:
        yield client


def atomic_write_bytes(path, data):
    """Write `data` to `path` so that a reader (or an interrupt) never sees a partial file."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=TEMPORARY_PREFIX, suffix=os.path.basename(path))
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # the mode of an ordinary new file, not mkstemp's 0600
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_json(path, obj):
    atomic_write_bytes(path, (json.dumps(obj, indent=2, default=_jsonable) + "\n").encode())


def _jsonable(x):
    if isinstance(x, (np.integer, np.floating)):
        return x.item()
    if isinstance(x, (np.ndarray, torch.Tensor)):
        return x.tolist()
    return str(x)


def atomic_torch_save(obj, path):
    """torch.save through a temporary file and an atomic rename."""
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


# ---------------------------------------------------------------- argparse value checks
def _checked(kind, test, what):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not test(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    parse.__name__ = what  # argparse names the type in its error message
    return parse


positive_float = _checked(float, lambda v: v > 0 and np.isfinite(v), "a positive number")
nonnegative_float = _checked(float, lambda v: v >= 0 and np.isfinite(v), "a number >= 0")
positive_int = _checked(int, lambda v: v > 0, "a positive integer")
nonnegative_int = _checked(int, lambda v: v >= 0, "an integer >= 0")


# -------------------------------------------------------------- rounding surrogate (thesis eq. 13)
class _RoundSurrogate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, p, k):
        ctx.save_for_backward(p)
        ctx.k = k
        return torch.round(p)

    @staticmethod
    def backward(ctx, grad_out):
        (p,) = ctx.saved_tensors
        return grad_out * sigmoid_slope(p, 0.5, ctx.k), None


def round_surrogate(p, k=25.0):
    """Forward: round(p) (p a probability, so 0 or 1). Backward: the slope of a sigmoid of
    sharpness k centred at 0.5 (thesis eq. 13), so the violation of the rounded solution has a
    gradient. Use as round_surrogate(torch.sigmoid(logits), k)."""
    return _RoundSurrogate.apply(p, float(k))


# ---------------------------------------------------------------- Lagrangian dual framework
def subgradient_step(multiplier, step, violation_sum):
    """Thesis Algorithm 1: lambda <- lambda + s * sum of violations over the training set.
    Violations are >= 0, so the multiplier never falls; the max(0, .) keeps it a valid dual."""
    return max(0.0, float(multiplier) + float(step) * float(violation_sum))


def mu_loss(label_loss, violation, mu):
    """Thesis eq. 15: mean over instances of (label loss + mu * violation); mu fixes how much
    feasibility is worth when selecting a checkpoint, independently of the training multiplier."""
    return float(np.mean(np.asarray(label_loss) + mu * np.asarray(violation)))


# ---------------------------------------------------------------- the LDF training loop
class TrainingDiverged(RuntimeError):
    """The loss, the weights or the multiplier stopped being finite; last.pt: the last good one."""


def checkpoint_is_finite(model, multiplier):
    """True when every weight, buffer and the multiplier are finite (a checkpoint worth keeping)."""
    tensors = list(model.state_dict().values())
    finite = all(bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point())
    return finite and math.isfinite(multiplier)


def load_checkpoint(path, what="checkpoint"):
    """torch.load, with an error naming the file when it is missing, truncated or no checkpoint."""
    path = os.fspath(path)
    try:
        checkpoint = torch.load(path, weights_only=False, map_location="cpu")
    except FileNotFoundError:
        raise SystemExit(f"{path}: no such {what}") from None
    except Exception as err:
        raise SystemExit(
            f"{path}: not a readable {what} ({type(err).__name__}: {str(err)[:200]}); "
            "delete it or pass another file"
        ) from None
    if not isinstance(checkpoint, dict) or "model" not in checkpoint:
        raise SystemExit(f"{path}: not an ldf-ip {what} (no model weights in it)")
    return checkpoint


def resume_checkpoint(out, fingerprint, fresh):
    """<out>/last.pt when a run should resume from it, else None (and stale checkpoints of an
    earlier run in `out` are removed, so that nothing this run did not produce is ever reported).

    fingerprint: what must be equal to resume (problem, model, data, hyper-parameters); a last.pt
    with another fingerprint is refused with the names of the settings that differ."""
    last = os.path.join(out, "last.pt")
    remove_stale_temporaries(out)  # what a killed checkpoint write left behind
    if os.path.exists(last) and not fresh:
        checkpoint = load_checkpoint(last, "training checkpoint (last.pt)")
        saved = checkpoint.get("fingerprint", {})
        differ = sorted(
            k for k in set(saved) | set(fingerprint) if saved.get(k) != fingerprint.get(k)
        )
        if differ:
            raise SystemExit(
                f"{last} was trained with other settings ({', '.join(differ)}): "
                "pass --fresh to start over, or another output folder"
            )
        return checkpoint
    os.makedirs(out, exist_ok=True)
    for name in os.listdir(out):
        if name.endswith(".pt") and (name.startswith("best_") or name == "last.pt"):
            os.remove(os.path.join(out, name))
    return None


def train_ldf(
    model,
    optimizer,
    train_rows,
    batch_loss,
    validate,
    out,
    *,
    ldf,
    epochs,
    patience,
    batch_size,
    max_grad_norm,
    lambda0,
    step,
    mus,
    select,
    track,
    seed,
    saved,
    fingerprint,
    resume=None,
    violation_sum=None,
):
    """The Lagrangian dual framework's training loop (thesis Algorithm 1), for both problems.

    Each epoch: Adam over shuffled mini-batches of `train_rows` (gradient norm clipped to
    `max_grad_norm`, 0 = no clipping); then validation; then, for LDF, one subgradient step of the
    multiplier, lambda <- lambda + step * (sum of the training set's violations). Checkpoints:
    best_<criterion>.pt for every tracked criterion, last.pt (optimizer and state, to resume).

    batch_loss(rows, multiplier) -> (loss, label loss per instance, violation per instance), with
        the model in training mode; loss is the scalar minimised.
    validate() -> dict with "ar" (mean validation AR), "label_loss" and "violation" (per-instance
        arrays; the label loss summed over the decisions as the mu-loss wants it), and any further
        numbers for the history.
    violation_sum() -> the training set's violation sum for the multiplier step, from a separate
        pass; None: the sum over the epoch's mini-batches.
    track: the criteria that count as progress, from "ar", "loss" (validation label loss +
        lambda * violation) and "mu<m>" for m in mus; `select` is one of them, the model's result.
    Stopping: after `epochs`, or once `patience` epochs in a row improved no tracked criterion (the
    thesis: 400, at most 500 epochs). A non-finite loss, weight or multiplier raises
    TrainingDiverged; last.pt then still holds the last good epoch.
    saved: stored in every checkpoint (config, normalisation, data identity).
    resume: a last.pt from resume_checkpoint(), or None.
    Returns (state, path of the selected checkpoint)."""
    from tqdm import tqdm

    if select not in track:
        raise ValueError(f"select={select!r} must be one of track={track}")
    state = {
        "epoch": 0,
        "multiplier": lambda0 if ldf else 0.0,
        "history": [],
        "best": {},
        "since_best": 0,
        "train_seconds": 0.0,
        "stopped": None,
    }
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        state = resume["state"]
        print(
            f"resuming from {os.path.join(out, 'last.pt')} at epoch {state['epoch']} "
            f"(multiplier {state['multiplier']:.4g})"
        )

    def save(name, **extra):
        checkpoint = {
            "model": model.state_dict(),
            "epoch": state["epoch"],
            "multiplier": state["multiplier"],
            "fingerprint": fingerprint,
            **saved,
            **extra,
        }
        atomic_torch_save(checkpoint, os.path.join(out, name))

    def diverged(what):
        return TrainingDiverged(
            f"{what} in epoch {state['epoch'] + 1}: training stopped. "
            f"{os.path.join(out, 'last.pt')} holds the last good epoch ({state['epoch']}); "
            "lower --lr, --step or --lambda0, or set --max-grad-norm"
        )

    train_rows = np.asarray(train_rows)
    bar = tqdm(total=epochs, initial=state["epoch"], desc=f"train ({select})", unit="epoch")
    for epoch in range(state["epoch"], epochs):
        if state["since_best"] >= patience:  # also when resuming a run that stopped early
            state["stopped"] = "patience"
            break
        started = time.perf_counter()
        sums = np.zeros(3)  # loss * rows, label loss, violation over the epoch
        perm = np.random.default_rng([seed, epoch]).permutation(train_rows)
        for start in range(0, len(perm) - 1, batch_size):  # (batch norm needs two rows)
            rows = np.sort(perm[start : start + batch_size])
            model.train()
            loss, label, violation = batch_loss(rows, state["multiplier"])
            if not torch.isfinite(loss):
                raise diverged(f"the loss became {loss.item()}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
            optimizer.step()
            sums += [loss.item() * len(rows), label.sum().item(), violation.sum().item()]
        val = validate()
        label_val = np.asarray(val["label_loss"], dtype=np.float64)
        nu_val = np.asarray(val["violation"], dtype=np.float64)
        values = {"ar": float(val["ar"]), "loss": mu_loss(label_val, nu_val, state["multiplier"])}
        for mu in mus:
            values[f"mu{mu:g}"] = mu_loss(label_val, nu_val, mu)
        if ldf:  # Algorithm 1: one subgradient step per epoch on the training set's violations
            total = sums[2] if violation_sum is None else violation_sum()
            state["multiplier"] = subgradient_step(state["multiplier"], step, total)
        if not checkpoint_is_finite(model, state["multiplier"]):
            raise diverged("the weights or the multiplier became non-finite")
        state["epoch"] = epoch + 1
        state["train_seconds"] += time.perf_counter() - started
        n_train = len(train_rows)
        row = {
            "epoch": epoch + 1,
            "loss": sums[0] / n_train,
            "label_loss": sums[1] / n_train,
            "violation": sums[2] / n_train,
            "multiplier": state["multiplier"],
            "seconds": state["train_seconds"],
            **{f"val_{name}": value for name, value in values.items()},
            **{
                f"val_{k}": float(v)
                for k, v in val.items()
                if k not in ("ar", "label_loss", "violation")
            },
        }
        state["history"].append(row)
        state["since_best"] += 1
        for name in track:
            if values[name] < state["best"].get(name, (math.inf,))[0]:
                state["best"][name] = (values[name], epoch + 1, state["train_seconds"])
                state["since_best"] = 0
                save(f"best_{name}.pt", selected_by=name, value=values[name])
        save("last.pt", optimizer=optimizer.state_dict(), state=state)
        bar.update(1)
        bar.set_postfix(
            ar=f"{values['ar']:.4f}",
            viol=f"{float((nu_val > 0).mean()):.1%}",
            lam=f"{state['multiplier']:.4g}",
        )
    else:
        state["stopped"] = "epochs"
    bar.close()
    return state, os.path.join(out, f"best_{select}.pt")


# ---------------------------------------------------------------- approximation ratio (eq. 14, 17)
def approximation_ratio(pred_obj, opt_obj, gap=None):
    """Per-instance approximation ratio, >= 1, 1 = optimal.

    gap=None (thesis eq. 14, knapsack): max(pred/opt, opt/pred); 1 when both objectives are 0 and
    2 when exactly one is (the ratio is undefined there, the thesis scores it 2).
    gap given (thesis eq. 17, CSP, a minimisation whose label is only proven within a relative
    MIP gap): the optimum lies in [opt*(1-gap), opt]; a prediction below the middle of that range
    scores opt/pred, above it pred/(opt*(1-gap)).
    """
    pred = np.asarray(pred_obj, dtype=np.float64)
    opt = np.asarray(opt_obj, dtype=np.float64)
    if gap is None:
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.maximum(pred / opt, opt / pred)
        zero_p, zero_o = pred == 0, opt == 0
        ratio = np.where(zero_p & zero_o, 1.0, np.where(zero_p ^ zero_o, 2.0, ratio))
        return ratio
    lower = opt * (1.0 - np.asarray(gap, dtype=np.float64))
    middle = 0.5 * (lower + opt)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(pred <= middle, opt / pred, pred / lower)
