"""What knapsack_ldf.py and csp_ldf.py share, and nothing else.

The thesis' vocabulary: a *surrogate* gradient stands in for the zero gradient of rounding (or of a
one-hot argmax); the *violation* nu of a constraint is relaxed into the loss with a Lagrange
*multiplier* lambda, which a *subgradient step* raises once per epoch; models are selected by the
approximation ratio (AR) or by the *mu-loss* (label loss + mu * violation).
"""

import argparse
import contextlib
import dataclasses
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


# glibc's mallopt parameters (malloc.h) and the values keep_freed_memory sets
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 1 << 30  # blocks up to 1 GiB come from the heap, not a fresh mmap
MMAP_THRESHOLD_FALLBACK_BYTES = 32 << 20  # glibc's own ceiling where it refuses more
TRIM_THRESHOLD_BYTES = (1 << 31) - 1  # an int: never hand freed heap memory back while training


def keep_freed_memory():
    """Let glibc's malloc reuse freed blocks instead of returning them to the system: every large
    tensor a training step allocates (activations, gradients, Adam's temporaries: megabytes
    each) was otherwise often a fresh mmap, zero-filled page by page on first touch (1,300-8,600
    page faults a step of the knapsack FC network, measured; 260-810 with this). Only where
    memory comes from changes: results are bit-identical. The process keeps its peak heap until
    it exits. True when glibc took the settings; a no-op (False) on other C libraries."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mmap_set = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) or mallopt(
        M_MMAP_THRESHOLD, MMAP_THRESHOLD_FALLBACK_BYTES
    )
    return bool(mmap_set and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))


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


def torch_bytes(obj):
    """What torch.save writes for `obj`, as bytes (a snapshot: later changes to its tensors do
    not reach them)."""
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def atomic_torch_save(obj, path):
    """torch.save through a temporary file and an atomic rename."""
    atomic_write_bytes(path, torch_bytes(obj))


class BackgroundWriter:
    """Atomic file writes (atomic_write_bytes) in one background thread, in the order they were
    asked for, so that the disk and its fsync overlap the next epoch's training. wait() returns
    once every write asked for so far is on disk, and raises the first write's error; use it as a
    context manager, which waits on leaving (also on an exception)."""

    def __init__(self):
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint-writer")
        self._pending = []

    def write(self, path, data):
        self._pending.append(self._pool.submit(atomic_write_bytes, path, data))

    def wait(self):
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    def __enter__(self):
        return self

    def __exit__(self, kind, value, traceback):
        try:
            self.wait()
        except Exception:
            if kind is None:  # an error already on its way is the one to report
                raise
        finally:
            self._pool.shutdown()


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


def given_options(parser, argv):
    """The dests of the options given on the command line `argv` (None: sys.argv[1:]), abbreviated
    flags included: a second parse with every default suppressed."""
    defaults = [(action, action.default) for action in parser._actions]
    for action, _ in defaults:
        action.default = argparse.SUPPRESS
    try:
        return set(vars(parser.parse_args(argv)))
    finally:
        for action, default in defaults:
            action.default = default


def given_flags(parser, argv):
    """given_options as the long flags ("--time-limit"), whatever abbreviation was typed."""
    dests = given_options(parser, argv)
    return {
        next(flag for flag in action.option_strings if flag.startswith("--"))
        for action in parser._actions
        if action.dest in dests and action.option_strings
    }


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


# ---------------------------------------------------------------- dual variants (beyond the thesis)
DUALS = ("scalar", "per-instance", "augmented", "dual-net")
DUAL_NET_HIDDEN = 64  # width of the dual network's one hidden layer
DUAL_NET_LR = 1e-2  # Adam learning rate of the dual network (ascent on the Lagrangian)


def inverse_softplus(value):
    """z with softplus(z) = value (> 0): the dual network's output bias, so it starts at lambda0."""
    return value + math.log(-math.expm1(-value))


class DualNetMultiplier(torch.nn.Module):
    """Primal-dual learning's dual network (Park and Van Hentenryck, AAAI 2023): the instance's
    inputs -> hidden layer -> lambda = softplus(.) >= 0. The output layer starts at weight 0 and
    bias softplus^-1(lambda0), so every instance starts at lambda0, as the other variants do; the
    network then gives a multiplier for any instance, seen in training or not. A cooper
    ImplicitMultiplier (constraint features: the instance's inputs)."""

    expects_constraint_features = True

    def __init__(self, n_features, lambda0, seed, hidden=DUAL_NET_HIDDEN):
        super().__init__()
        with torch.random.fork_rng(devices=[]):  # its initialisation leaves the global RNG alone
            torch.manual_seed(seed)
            self.hidden = torch.nn.Sequential(torch.nn.Linear(n_features, hidden), torch.nn.ReLU())
            self.output = torch.nn.Linear(hidden, 1)
        with torch.no_grad():
            self.output.weight.zero_()
            self.output.bias.fill_(inverse_softplus(max(float(lambda0), LAMBDA_FLOOR)))

    def forward(self, features):
        return torch.nn.functional.softplus(self.output(self.hidden(features))).squeeze(-1)

    def post_step_(self):
        """softplus keeps lambda >= 0: nothing to project."""

    def sanity_check(self):
        """No entry to check: the outputs are >= 0 by construction."""

    def set_constraint_type(self, constraint_type):
        self.constraint_type = constraint_type


LAMBDA_FLOOR = 1e-12  # softplus never reaches 0: a dual network asked for lambda0 = 0 starts here


class LagrangianDual:
    """The multipliers beyond the thesis' one scalar, with cooper (cooper-optim): one inequality
    constraint nu_i <= 0 per training instance i, in a cooper Lagrangian (per-instance,
    dual-net) or augmented Lagrangian (augmented) formulation.

    per-instance: lambda_i (a cooper IndexedMultiplier), raised once per epoch by its own
        violation, lambda_i <- max(0, lambda_i + step * nu_i) (SGD ascent on the Lagrangian).
    augmented: the same lambda_i, the loss adds rho/2 * nu_i^2, and lambda_i rises by the
        method of multipliers, lambda_i <- max(0, lambda_i + rho * nu_i).
    dual-net: lambda_i = DualNetMultiplier(inputs of instance i), one Adam ascent step on the
        batch's Lagrangian mean(lambda_i * nu_i) after every primal step.

    The primal loss is the batch mean of (label loss + the constraint's Lagrangian term), as the
    thesis' loss with lambda_i in place of lambda."""

    def __init__(
        self,
        kind,
        train_rows,
        *,
        lambda0,
        step,
        rho=None,
        features=None,
        seed=0,
        dual_lr=DUAL_NET_LR,
    ):
        import cooper

        if kind not in DUALS[1:]:
            raise ValueError(f"dual={kind!r}: expected one of {DUALS[1:]}")
        self.kind = kind
        self.train_rows = np.asarray(train_rows)
        self.order = np.argsort(self.train_rows, kind="stable")
        self.features = features
        if kind == "dual-net":
            if features is None:
                raise ValueError("dual='dual-net' needs features: the inputs of every instance")
            multiplier = DualNetMultiplier(features.shape[1], lambda0, seed).to(features.device)
            self.optimizer = torch.optim.Adam(multiplier.parameters(), lr=dual_lr, maximize=True)
        else:
            init = torch.full((len(self.train_rows),), float(lambda0))
            multiplier = cooper.multipliers.IndexedMultiplier(init=init)
            if kind == "augmented" and not (rho is not None and rho > 0):
                raise ValueError("dual='augmented' needs a penalty rho > 0")
            dual_step = rho if kind == "augmented" else step  # the method of multipliers: rho
            self.optimizer = torch.optim.SGD(multiplier.parameters(), lr=dual_step, maximize=True)
        penalty = None
        formulation = cooper.formulations.Lagrangian
        if kind == "augmented":
            penalty = cooper.penalty_coefficients.DensePenaltyCoefficient(torch.tensor(float(rho)))
            formulation = cooper.formulations.AugmentedLagrangian
        self.multiplier = multiplier
        self.constraint = cooper.Constraint(
            cooper.ConstraintType.INEQUALITY,
            formulation_type=formulation,
            multiplier=multiplier,
            penalty_coefficient=penalty,
        )
        self.cooper = cooper

    def positions(self, rows):
        """Positions in train_rows of the instances `rows` (the index of their lambda_i)."""
        sorted_rows = self.train_rows[self.order]
        return torch.from_numpy(self.order[np.searchsorted(sorted_rows, np.asarray(rows))])

    def constraint_features(self, rows):
        if self.kind == "dual-net":
            return self.features[torch.as_tensor(np.asarray(rows), device=self.features.device)]
        return self.positions(rows)

    def _state(self, violation, rows):
        """A cooper CMPState holding the constraint nu_i <= 0 of instances `rows`."""
        constraint_state = self.cooper.ConstraintState(
            violation=violation,
            constraint_features=self.constraint_features(rows),
            strict_violation=violation.detach(),  # the rounded prediction's violation drives
        )
        return self.cooper.CMPState(observed_constraints={self.constraint: constraint_state})

    def primal_loss(self, objective, violation, rows):
        """objective (the batch's mean label loss) + mean over the batch of the constraint's
        Lagrangian term: lambda_i * nu_i, or for augmented lambda_i * nu_i + rho/2 * nu_i^2."""
        store = self._state(violation, rows).compute_primal_lagrangian()
        return objective + store.lagrangian / len(rows)

    def ascend(self, violation, rows, batch_mean):
        """One ascent step of the multipliers on the Lagrangian sum (or batch mean) of
        lambda_i * nu_i over instances `rows`; then cooper's projection to lambda >= 0."""
        store = self._state(violation.detach(), rows).compute_dual_lagrangian()
        self.optimizer.zero_grad(set_to_none=True)
        lagrangian = store.lagrangian / len(rows) if batch_mean else store.lagrangian
        lagrangian.backward()
        self.optimizer.step()
        self.multiplier.post_step_()

    def after_batch(self, violation, rows):
        """dual-net: one Adam ascent step on this batch's Lagrangian after the primal step."""
        if self.kind == "dual-net":
            self.ascend(violation, rows, batch_mean=True)

    def after_epoch(self, violation):
        """per-instance, augmented: lambda_i <- max(0, lambda_i + step * nu_i) for every training
        instance, nu in the order of train_rows (Algorithm 1, one multiplier per instance)."""
        if self.kind != "dual-net":
            self.ascend(torch.as_tensor(violation, dtype=torch.float32), self.train_rows, False)

    @torch.no_grad()
    def values(self, rows=None):
        """lambda_i of instances `rows` (default: the training set), as a float64 numpy array."""
        rows = self.train_rows if rows is None else np.asarray(rows)
        if self.kind == "dual-net":
            features = self.constraint_features(rows)
            batches = [features[s : s + PREDICT_BATCH] for s in range(0, len(rows), PREDICT_BATCH)]
            values = torch.cat([self.multiplier(batch) for batch in batches])
        else:
            values = self.multiplier(self.positions(rows))
        return values.double().cpu().numpy()

    def summary(self):
        """Statistics of the training set's multipliers for the history: mean, quantiles, max;
        for the dual network also the mean over the instances it never trained on."""
        values = self.values()
        row = {
            "multiplier": float(values.mean()),
            "multiplier_min": float(values.min()),
            "multiplier_median": float(np.median(values)),
            "multiplier_p90": float(np.quantile(values, QUANTILE_HIGH)),
            "multiplier_max": float(values.max()),
        }
        if self.kind == "dual-net":
            unseen = np.setdiff1d(np.arange(len(self.features)), self.train_rows)
            if len(unseen):
                row["multiplier_unseen"] = float(self.values(unseen).mean())
        return row

    def is_finite(self):
        return all(bool(torch.isfinite(t).all()) for t in self.multiplier.state_dict().values())

    def state_dict(self):
        return {
            "kind": self.kind,
            "multiplier": self.multiplier.state_dict(),
            "optimizer": self.optimizer.state_dict(),
        }

    def load_state_dict(self, saved):
        if saved.get("kind") != self.kind:
            raise ValueError(f"dual state of {saved.get('kind')!r}, this run is {self.kind!r}")
        self.multiplier.load_state_dict(saved["multiplier"])
        self.optimizer.load_state_dict(saved["optimizer"])


PREDICT_BATCH = 4096  # rows per forward pass when evaluating a network over a whole split
QUANTILE_HIGH = 0.9


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


@dataclasses.dataclass(frozen=True)
class LDFSettings:
    """How train_ldf trains (each field as train_ldf's docstring describes it)."""

    ldf: bool  # the multiplier term in the loss (LDF), or the label loss alone (FC)
    epochs: int
    patience: int
    batch_size: int
    max_grad_norm: float
    lambda0: float
    step: float
    mus: tuple
    select: str
    track: tuple
    seed: int
    dual: str = "scalar"
    dual_options: dict | None = None


def train_ldf(
    model,
    optimizer,
    train_rows,
    batch_loss,
    validate,
    out,
    settings,
    *,
    saved,
    fingerprint,
    resume=None,
    violation_sum=None,
    training_violations=None,
):
    """The Lagrangian dual framework's training loop (thesis Algorithm 1), for both problems,
    as `settings` (LDFSettings) asks.

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
    dual: the multipliers (DUALS). "scalar": the thesis' one lambda, as above (batch_loss gets a
        float). The others (LagrangianDual, through cooper) call batch_loss(rows, 0.0), so its
        loss must be the batch mean of (label loss + multiplier * violation), and add the
        constraint's Lagrangian term themselves: "per-instance" (one lambda_i per training
        instance, raised once per epoch by step * its own violation), "augmented" (the same
        lambda_i raised by rho * nu_i, plus rho/2 * nu_i^2 in the loss), "dual-net" (a network
        of the instance's inputs gives lambda_i, one Adam ascent step per batch).
    dual_options: LagrangianDual's keywords: rho (augmented), features (dual-net: the inputs of
        every instance, a tensor indexed by row), dual_lr (dual-net).
    training_violations() -> the violation of every training instance (in the order of
        train_rows) for the per-instance and augmented steps, from a separate pass; None: each
        instance's violation in the epoch's mini-batch.
    Checkpoints carry the dual's state ("dual"): resuming is bit-identical for every variant.
    Returns (state, path of the selected checkpoint)."""
    from tqdm import tqdm

    ldf = settings.ldf
    epochs = settings.epochs
    patience = settings.patience
    batch_size = settings.batch_size
    max_grad_norm = settings.max_grad_norm
    lambda0 = settings.lambda0
    step = settings.step
    mus = settings.mus
    select = settings.select
    track = settings.track
    seed = settings.seed
    dual = settings.dual
    dual_options = settings.dual_options
    if select not in track:
        raise ValueError(f"select={select!r} must be one of track={track}")
    if dual not in DUALS:
        raise ValueError(f"dual={dual!r}: expected one of {DUALS}")
    if dual != "scalar" and not ldf:
        raise ValueError(f"dual={dual!r} moves LDF multipliers: the model without LDF has none")
    multipliers = None  # the LagrangianDual of every variant but the thesis' scalar
    if dual != "scalar":
        options = {"seed": seed, **(dual_options or {})}
        multipliers = LagrangianDual(dual, train_rows, lambda0=lambda0, step=step, **options)
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
        if multipliers is not None:
            multipliers.load_state_dict(state["dual"])
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
        if multipliers is not None:
            checkpoint["dual"] = multipliers.state_dict()
        writer.write(os.path.join(out, name), torch_bytes(checkpoint))

    def diverged(what):
        return TrainingDiverged(
            f"{what} in epoch {state['epoch'] + 1}: training stopped. "
            f"{os.path.join(out, 'last.pt')} holds the last good epoch ({state['epoch']}); "
            "lower --lr, --step or --lambda0, or set --max-grad-norm"
        )

    train_rows = np.asarray(train_rows)
    if multipliers is not None and "dual" not in state:
        state["dual"] = multipliers.state_dict()
        state.update(multipliers.summary())
    with BackgroundWriter() as writer:  # checkpoints reach the disk beside the next epoch
        bar = tqdm(total=epochs, initial=state["epoch"], desc=f"train ({select})", unit="epoch")
        for epoch in range(state["epoch"], epochs):
            if state["since_best"] >= patience:  # also when resuming a run that stopped early
                state["stopped"] = "patience"
                break
            started = time.perf_counter()
            sums = np.zeros(3)  # loss * rows, label loss, violation over the epoch
            seen = {}  # the epoch's per-instance violations (without training_violations)
            perm = np.random.default_rng([seed, epoch]).permutation(train_rows)
            for start in range(0, len(perm) - 1, batch_size):  # (batch norm needs two rows)
                rows = np.sort(perm[start : start + batch_size])
                model.train()
                if multipliers is None:
                    loss, label, violation = batch_loss(rows, state["multiplier"])
                else:
                    objective, label, violation = batch_loss(rows, 0.0)
                    loss = multipliers.primal_loss(objective, violation, rows)
                if not torch.isfinite(loss):
                    raise diverged(f"the loss became {loss.item()}")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
                optimizer.step()
                if multipliers is not None:
                    multipliers.after_batch(violation, rows)
                    seen.update(zip(rows.tolist(), violation.detach().tolist(), strict=True))
                sums += [loss.item() * len(rows), label.sum().item(), violation.sum().item()]
            val = validate()
            label_val = np.asarray(val["label_loss"], dtype=np.float64)
            nu_val = np.asarray(val["violation"], dtype=np.float64)
            values = {
                "ar": float(val["ar"]),
                "loss": mu_loss(label_val, nu_val, state["multiplier"]),
            }
            for mu in mus:
                values[f"mu{mu:g}"] = mu_loss(label_val, nu_val, mu)
            if ldf and multipliers is None:  # Algorithm 1: one subgradient step per epoch
                total = sums[2] if violation_sum is None else violation_sum()
                state["multiplier"] = subgradient_step(state["multiplier"], step, total)
            elif multipliers is not None:
                if training_violations is not None:
                    nu_train = np.asarray(training_violations(), dtype=np.float64)
                else:  # an instance a last odd-sized batch skipped keeps its lambda_i this epoch
                    nu_train = np.array([seen.get(row, 0.0) for row in train_rows.tolist()])
                multipliers.after_epoch(nu_train)
                state.update(multipliers.summary())
                state["dual"] = multipliers.state_dict()
                if not multipliers.is_finite():
                    raise diverged("the multipliers became non-finite")
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
                **{k: v for k, v in state.items() if k.startswith("multiplier_")},
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
            writer.wait()  # the previous epoch's checkpoints are on disk before these are asked for
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
