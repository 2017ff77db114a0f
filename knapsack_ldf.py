"""0/1 knapsack with the Lagrangian dual framework (thesis chapter 3), in one file.

    instances -> exact labels -> model (FC) -> loss (BCE + lambda * violation) -> train -> evaluate

The file follows that order (1. instances ... 7. evaluate), each section using only what is
defined above it; the command line and main come last.

    python knapsack_ldf.py --model fc                             # Table 2: the FC baseline
    python knapsack_ldf.py --lr 1e-4 --step 1e-7                  # Table 3: LDF
    python knapsack_ldf.py --pretrained runs/knapsack/fc/fc.pt    # Table 4: LDF from the trained FC
    python knapsack_ldf.py --eval-only runs/knapsack/ldf/ldf.pt   # the tables of a saved checkpoint

Defaults are the thesis' set-up: its instances (the thesis code's integer weights and values in
[1, 2000], which the text calls U[0,1] after min-max scaling), its violation (the raw overshoot
max(0, sum_i xhat_i w_i - W) in weight units), its selected learning rate, Lagrangian step and
gradient clipping per model, its model selection (FC: validation AR; LDF: the 1-loss) and its
stopping rule (at most 500 epochs; stop once 400 epochs in a row improved neither the validation
AR, the validation loss nor any mu-loss).
"""

import argparse
import hashlib
import io
import itertools
import json
import multiprocessing as mp
import os
import sys
import time

# Threads that wait for each other spin by default; beside another busy process that made training
# several times slower on 2 cores (bench/knapsack_threads.py). Set before torch loads OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from tqdm import tqdm  # noqa: E402

import common  # noqa: E402

THESIS_VALUE_RANGE = 2000  # thesis code (0-1_Knapsack/Gen_Instances.py): w, v ~ randint(1, 2000)
LABEL_CHUNK = 500  # instances per label file: the unit of resuming
EVAL_SEED_OFFSET = 7  # fresh instances of other sizes (--eval-items) are drawn with seed + 7
SPLIT_SEED_OFFSET = 1  # the train/val/test shuffle is drawn with seed + 1
QUINTILES = 5
TRAIN_SHARE = 0.8  # the 80 of the 80/10/10 split
TRAIN_VAL_SHARE = 0.9  # the 80 + 10 of it: the test split is the rest

# The thesis' selected hyper-parameters (section 3.3), used where a flag is not given.
THESIS_SETTINGS = {
    "fc": {"lr": 1e-3, "step": 0.0, "max_grad_norm": 10.0},
    "ldf": {"lr": 1e-4, "step": 1e-7, "max_grad_norm": 0.5},
    "ldf-pretrained": {"lr": 1e-4, "step": 1e-4, "max_grad_norm": 10.0},
}
THESIS_GRID = {  # Table 1: learning rates, Lagrangian steps, max grad norms searched per model
    "fc": ([1e-4, 1e-3], [0.0], [1.0, 10.0]),
    "ldf": ([1e-5, 1e-4, 1e-3], [1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3], [0.5, 1.0, 10.0]),
    "ldf-pretrained": ([1e-4, 1e-3], [1e-7, 1e-6, 1e-5, 1e-4, 1e-3], [1.0, 10.0]),
}
THESIS_EPOCHS = 500
THESIS_PATIENCE = 400

# The thesis' Tables 2-4 (test split): quintile rows of alpha, then "all".
# % violated, mean violation (% of W), % under, % over, Avg-O %, Avg-U %, AR; None = N/A.
THESIS_TABLES = {
    "fc": [
        (64.7, 105.7, 64.1, 35.9, 39.1, 13.6, 1.254),
        (66.1, 8.77, 56.8, 43.2, 3.26, 4.49, 1.0417),
        (95.42, 9.9, 14.92, 85.1, 3.17, 1.36, 1.029),
        (99.84, 10.4, 8.6, 91.4, 1.97, 0.55, 1.0185),
        (100.0, 7.55, 3.17, 96.83, 0.66, 0.11, 1.0064),
        (84.93, 21.14, 30.0, 70.0, 5.89, 7.76, 1.0703),
    ],
    "ldf": [
        (10.48, 195.0, 96.8, 3.16, 113.2, 30.35, 1.5643),
        (0.16, 2.93, 100.0, 0.0, None, 12.73, 1.1521),
        (0.0, None, 100.0, 0.0, None, 8.46, 1.0931),
        (0.0, None, 100.0, 0.0, None, 5.88, 1.0628),
        (0.0, None, 100.0, 0.0, None, 2.62, 1.027),
        (2.13, 191.0, 99.4, 0.6, 113.24, 12.0, 1.1811),
    ],
    "ldf-pretrained": [
        (14.0, 278.0, 93.8, 6.2, 92.1, 30.4, 1.51),
        (0.32, 1.93, 100.0, 0.0, None, 2.38, 1.1894),
        (0.17, 1.38, 100.0, 0.0, None, 8.78, 1.09732),
        (0.0, None, 100.0, 0.0, None, 5.29, 1.0562),
        (0.0, None, 100.0, 0.0, None, 2.37, 1.0245),
        (2.9, 268.0, 98.8, 1.2, 92.1, 12.4, 1.177),
    ],
}
THESIS_TRAINING = {  # Table 5: epochs and minutes to converge (6-core i5-11400)
    "fc": (16, 0.7),
    "ldf-pretrained": (46, 2.6),
    "ldf": (250, 16.0),
}


# ====================================================================== runs: names, precision
PRETRAIN_FOLDER = "fc"  # --pretrain-epochs: <out>/fc holds the FC run LDF starts from
PRETRAIN_PENDING = "<the FC of --pretrain-epochs>"  # stands for its checkpoint while naming


def model_kind(cfg):
    """fc, ldf or ldf-pretrained: the thesis' three models."""
    if cfg["model"] == "fc":
        return "fc"
    return "ldf-pretrained" if cfg.get("pretrained") else "ldf"


def class_folder(cfg):
    """[] for the thesis' uncorrelated data (runs/knapsack/<model>), else [<class>_R<R>]."""
    distribution = cfg.get("distribution", "uncorrelated")
    if distribution == "uncorrelated":
        return []
    if distribution == "similar-weights":
        return [distribution]
    return [f"{distribution}_R{cfg['value_range']}"]


def run_name(cfg):
    """fc, ldf, ldf-pretrained, ldf-labelfree, ldf-set, ... from a config dict."""
    name = model_kind(cfg)
    if cfg.get("supervision") == "none":
        name += "-labelfree"
    if cfg.get("arch", "fc") == "set":
        name += "-set"
    if cfg.get("dual", "scalar") != "scalar":
        name += "-" + cfg["dual"]
    if cfg.get("pretrain_epochs"):
        name += f"-fc{cfg['pretrain_epochs']}"
    return name


def use_bf16(precision, device):
    """bfloat16 autocast: asked for, or 'auto' on CUDA and on CPUs with bfloat16 matrix
    instructions (AMX tiles or AVX-512 BF16), where oneDNN runs bf16 matrix products natively."""
    if precision != "auto":
        return precision == "bf16"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


# ====================================================================== 1. instances
# D. Pisinger, "Where are the hard knapsack problems?", Computers & Operations Research 32 (2005):
# the classes of his generator, all with integer weights w and values v; R is the data range.
DISTRIBUTIONS = (
    "uncorrelated",  # w, v ~ U{1..R} (the thesis' data)
    "weakly-correlated",  # w ~ U{1..R}, v = max(1, w + U{-R/10..R/10})
    "strongly-correlated",  # w ~ U{1..R}, v = w + R/10
    "inverse-strongly-correlated",  # v ~ U{1..R}, w = v + R/10
    "almost-strongly-correlated",  # w ~ U{1..R}, v = w + R/10 + U{-R/500..R/500}
    "subset-sum",  # w ~ U{1..R}, v = w
    "similar-weights",  # w ~ U{100000..100100}, v ~ U{1..1000} (R unused)
    "spanner-uncorrelated",  # spanner(2, 10) instances over the base class after "spanner-"
    "spanner-weakly-correlated",
    "spanner-strongly-correlated",
)
SPANNER_PREFIX = "spanner-"
CORRELATION_DIVISOR = 10  # R/10: the spread of weakly and the offset of strongly correlated data
ALMOST_STRONG_DIVISOR = 500  # R/500: the spread of almost strongly correlated data
SIMILAR_WEIGHT_LOW = 100_000  # similar weights: w ~ U{100000..100100}
SIMILAR_WEIGHT_SPREAD = 100
SIMILAR_VALUE_RANGE = 1000  # similar weights: v ~ U{1..1000}
SPANNER_SIZE = 2  # v of spanner(v, m): items in the spanner set (Pisinger: 2)
SPANNER_MULTIPLIER = 10  # m of spanner(v, m): the largest multiple of a spanner item (Pisinger: 10)
# The smallest R at which a class's offsets are not 0 (R/10 >= 1, R/500 >= 1).
MIN_RANGE = {
    "weakly-correlated": CORRELATION_DIVISOR,
    "strongly-correlated": CORRELATION_DIVISOR,
    "inverse-strongly-correlated": CORRELATION_DIVISOR,
    "almost-strongly-correlated": ALMOST_STRONG_DIVISOR,
    "spanner-weakly-correlated": CORRELATION_DIVISOR,
    "spanner-strongly-correlated": CORRELATION_DIVISOR,
}


def draw_items(rng, distribution, shape, value_range):
    """Integer weights and values (int64 arrays of `shape`) of one of Pisinger's classes, spanner
    classes excepted."""
    offset = value_range // CORRELATION_DIVISOR
    if distribution == "similar-weights":
        high = SIMILAR_WEIGHT_LOW + SIMILAR_WEIGHT_SPREAD
        w = rng.integers(SIMILAR_WEIGHT_LOW, high, size=shape, endpoint=True)
        v = rng.integers(1, SIMILAR_VALUE_RANGE, size=shape, endpoint=True)
        return w, v
    if distribution == "inverse-strongly-correlated":
        v = rng.integers(1, value_range, size=shape, endpoint=True)
        return v + offset, v
    w = rng.integers(1, value_range, size=shape, endpoint=True)
    if distribution == "uncorrelated":
        v = rng.integers(1, value_range, size=shape, endpoint=True)
    elif distribution == "weakly-correlated":
        v = np.maximum(1, w + rng.integers(-offset, offset, size=shape, endpoint=True))
    elif distribution == "strongly-correlated":
        v = w + offset
    elif distribution == "almost-strongly-correlated":
        spread = value_range // ALMOST_STRONG_DIVISOR
        v = w + offset + rng.integers(-spread, spread, size=shape, endpoint=True)
    elif distribution == "subset-sum":
        v = w.copy()
    else:
        raise ValueError(f"unknown distribution {distribution!r}; expected one of {DISTRIBUTIONS}")
    return w, v


def draw_spanner_items(rng, base, shape, value_range):
    """Pisinger's spanner(v, m) instances: per instance a spanner set of v = SPANNER_SIZE items of
    the base class, normalised by dividing weights and values by m + 1 (rounded up, so they stay
    >= 1); every item is a spanner item drawn at random times a factor a ~ U{1..m}."""
    n_instances, n_items = shape
    span_w, span_v = draw_items(rng, base, (n_instances, SPANNER_SIZE), value_range)
    span_w = -(-span_w // (SPANNER_MULTIPLIER + 1))  # ceil(w / (m + 1)) in integers
    span_v = -(-span_v // (SPANNER_MULTIPLIER + 1))
    pick = rng.integers(0, SPANNER_SIZE, size=shape)
    factor = rng.integers(1, SPANNER_MULTIPLIER, size=shape, endpoint=True)
    w = np.take_along_axis(span_w, pick, 1) * factor
    v = np.take_along_axis(span_v, pick, 1) * factor
    return w, v


def make_instances(
    n_items, n_instances, seed, value_range=THESIS_VALUE_RANGE, distribution="uncorrelated"
):
    """Instances of one of Pisinger's classes (DISTRIBUTIONS; default: the thesis' uncorrelated
    w, v ~ U{1..R}); instance j = 1..S gets capacity W_j = j/(S+1) * sum(w), so alpha = W/sum(w)
    sweeps (0, 1) (Pisinger's capacity spread). Returned as float64 arrays holding integers (sums
    of them are exact)."""
    rng = np.random.default_rng(seed)
    shape = (n_instances, n_items)
    if distribution.startswith(SPANNER_PREFIX):
        base = distribution[len(SPANNER_PREFIX) :]
        w, v = draw_spanner_items(rng, base, shape, value_range)
    else:
        w, v = draw_items(rng, distribution, shape, value_range)
    w = w.astype(np.float64)
    v = v.astype(np.float64)
    j = np.arange(1, n_instances + 1)
    capacity = j / (n_instances + 1) * w.sum(1)
    return w, v, capacity


def split(n_instances, seed):
    """Seeded shuffle into 80/10/10 train/val/test index arrays."""
    perm = np.random.default_rng(seed + SPLIT_SEED_OFFSET).permutation(n_instances)
    n_train = int(TRAIN_SHARE * n_instances)
    n_train_val = int(TRAIN_VAL_SHARE * n_instances)
    return {
        "train": np.sort(perm[:n_train]),
        "val": np.sort(perm[n_train:n_train_val]),
        "test": np.sort(perm[n_train_val:]),
    }


# ====================================================================== 2. labels
SOLVERS = ("ortools", "core", "gurobi", "combo")
DEFAULT_TIME_LIMIT = 60.0  # seconds per instance before a label is given up with an error


class LabelTimeout(RuntimeError):
    """An exact solver could not prove a label optimal within the per-instance time limit."""


def default_solver(distribution):
    """The C++ solver (solve_combo) on every class: the fastest exact labels on all of them
    (bench/knapsack_exact.py). Earlier defaults, still options: OR-Tools on uncorrelated data,
    the numpy core algorithm on the other classes."""
    return "combo"


def solve_ortools(w, v, capacity, time_limit=None):
    """OR-Tools' knapsack branch and bound; LabelTimeout when it has not proven optimality within
    time_limit seconds."""
    from ortools.algorithms.python import knapsack_solver

    solver = knapsack_solver.KnapsackSolver(
        knapsack_solver.SolverType.KNAPSACK_MULTIDIMENSION_BRANCH_AND_BOUND_SOLVER, "labels"
    )
    solver.init(v.astype(np.int64).tolist(), [w.astype(np.int64).tolist()], [int(capacity)])
    if time_limit is not None:
        solver.set_time_limit(time_limit)
    solver.solve()
    if not solver.is_solution_optimal():
        within = "" if time_limit is None else f" within {time_limit:g} s"
        raise LabelTimeout(f"OR-Tools' branch and bound did not prove optimality{within}")
    return np.array([solver.best_solution_contains(i) for i in range(len(w))], dtype=np.uint8)


def dominance_filter(weight, value):
    """Merge of two lists sorted by weight with strictly rising values (the old states and the
    new ones, concatenated) into one such list: the indices of the states kept, by weight. A state
    is dropped when a lighter (or equally heavy) state matches it in value; two states share a
    weight at most in pairs."""
    order = np.argsort(weight, kind="stable")
    weight, value = weight[order], value[order]
    best_before = np.maximum.accumulate(np.concatenate([[np.iinfo(np.int64).min], value[:-1]]))
    next_weight = np.concatenate([weight[1:], [np.iinfo(np.int64).max]])
    next_value = np.concatenate([value[1:], [np.iinfo(np.int64).min]])
    keep = (value > best_before) & ~((next_weight == weight) & (next_value > value))
    return order[keep]


def dantzig_bound(w, v, capacity):
    """The LP bound of a knapsack (Dantzig), rounded down, for integer w > 0 and integer v (items
    with v <= 0 never help): exact integer arithmetic."""
    useful = v > 0
    w, v = w[useful], v[useful]
    order = np.argsort(-(v / w), kind="stable")
    w, v = w[order], v[order]
    prefix_weight = np.cumsum(w)
    b = int(np.searchsorted(prefix_weight, capacity, side="right"))
    if b == len(w):
        return int(v.sum())
    room = capacity - (int(prefix_weight[b - 1]) if b else 0)
    return int(v[:b].sum()) + room * int(v[b]) // int(w[b])


def cardinality_bound(w, v, capacity, target):
    """An upper bound on the value of every solution worth at least `target` (integer data), from
    the cardinality constraints that hold for them (Martello, Pisinger and Toth's combo, 1999):
    at most k_max items (the most that fit: the lightest) and at least k_min (the fewest whose
    largest values reach `target`). Their Lagrangian relaxation, for an integer multiplier lam,
    is lam * (k_max if lam >= 0 else k_min) + the LP bound with values v - lam; every lam gives a
    bound, an integer ternary search picks a small one. On strongly correlated data (v = w + K)
    lam = K makes every ratio 1 and the bound K * k_max + W: what an exact fill attains. Returns
    target - 1 when no solution can be worth `target`."""
    k_max = int(np.searchsorted(np.cumsum(np.sort(w)), capacity, side="right"))
    largest_values = np.cumsum(np.sort(v)[::-1])
    k_min = 0 if target <= 0 else int(np.searchsorted(largest_values, target, side="left")) + 1
    if k_min > k_max:
        return target - 1

    def lagrangian(lam):
        return lam * (k_max if lam >= 0 else k_min) + dantzig_bound(w, v - lam, capacity)

    low, high = -int(w.sum() + v.sum()), int(v.max())
    while high - low > 2:
        third = (high - low) // 3
        left, right = low + third, high - third
        if lagrangian(left) <= lagrangian(right):
            high = right
        else:
            low = left
    return min(lagrangian(lam) for lam in range(low, high + 1))


CORE_STATE_LIMIT = 4_000_000  # states of the core algorithm: beyond this it stops (memory)
CORE_BOUND_STATES = 1000  # with more states than this the core algorithm tries its global bound
BITS_PER_WORD = 64
INT64_SAFE = 2**62  # products of the core algorithm's bound tests must stay below this


def solve_core(w, v, capacity, time_limit=None):
    """Exact 0/1 knapsack for integer data by an expanding-core dynamic program in the spirit of
    Pisinger's minknap (Operations Research 45, 1997) and combo (Martello, Pisinger and Toth,
    Management Science 45, 1999), in numpy.

    Items are sorted by falling v/w; the break solution takes items 0..b-1 (the longest prefix
    that fits). The core [s, t] grows from the break item outwards, one item at a time on each
    side; every state is a solution that takes all items before s, none after t and any subset of
    the core, kept as (weight, value, bits of the core items toggled against the break solution).
    States dominated by a lighter, at least as valuable state are dropped, and so is every state
    whose bound cannot beat the incumbent z by 1: a state under the capacity can at best add
    items of ratio <= v/w of item t+1, one over it must remove items of ratio >= v/w of item s-1.
    When no state is left (or the core holds every item) the incumbent is optimal. As in combo,
    every step also pairs the states with one item outside the core (a better incumbent sooner),
    and once there are many states the cardinality bound (cardinality_bound) may prove z optimal
    early; this is what makes strongly correlated data tractable. All bound tests are exact
    integer arithmetic. Raises LabelTimeout after time_limit seconds."""
    started = time.perf_counter()
    n_items = len(w)
    capacity = int(np.floor(capacity))
    x = np.zeros(n_items, dtype=np.uint8)
    fits = np.nonzero(np.asarray(w) <= capacity)[0]  # a heavier item is in no solution
    if len(fits) == 0:
        return x
    ratio = np.asarray(v, dtype=np.float64)[fits] / np.asarray(w, dtype=np.float64)[fits]
    items = fits[np.argsort(-ratio, kind="stable")]
    wi = np.asarray(w)[items].astype(np.int64)
    vi = np.asarray(v)[items].astype(np.int64)
    if not (np.all(wi == np.asarray(w)[items]) and np.all(vi == np.asarray(v)[items])):
        raise ValueError("solve_core needs integer weights and values")
    if int(wi.sum()) * int(vi.max()) >= INT64_SAFE or int(vi.sum()) * int(wi.max()) >= INT64_SAFE:
        raise ValueError("solve_core: weights and values too large for exact int64 bounds")
    m = len(items)
    prefix_weight = np.cumsum(wi)
    # the break item; b >= 1, as every item left fits on its own
    b = int(np.searchsorted(prefix_weight, capacity, side="right"))
    if b == m:  # everything that fits at all fits together
        x[items] = 1
        return x
    # incumbent: the break solution, greedily filled with the later items that still fit
    best_take = np.zeros(m, dtype=bool)
    best_take[:b] = True
    room = capacity - int(prefix_weight[b - 1])
    for j in range(b, m):
        if wi[j] <= room:
            best_take[j] = True
            room -= int(wi[j])
    best_value = int(vi[best_take].sum())
    bounded_at = None  # the incumbent value the cardinality bound was last computed for

    weight = np.array([prefix_weight[b - 1]], dtype=np.int64)
    value = np.array([vi[:b].sum()], dtype=np.int64)
    bits = np.zeros((1, 1), dtype=np.uint64)
    toggled = []  # item positions in processing order: bit k of a state toggles toggled[k]
    s, t = b, b - 1  # the core is items s..t

    def take_of(row, extra=None):
        """The solution of candidate `row` of this step (and item position `extra` toggled) over
        the sorted items: its parent's bits, and the item of this step if it moved."""
        take = np.zeros(m, dtype=bool)
        take[:b] = True
        for bit, position in enumerate(toggled[:-1]):
            word, shift = divmod(bit, BITS_PER_WORD)
            if (int(bits[parent[row], word]) >> shift) & 1:
                take[position] = not take[position]
        if moved[row]:
            take[toggled[-1]] = not take[toggled[-1]]
        if extra is not None:
            take[extra] = not take[extra]
        return take

    while len(weight):
        for side in ("after", "before"):
            if not len(weight):
                break
            if side == "after" and t + 1 < m:
                t += 1
                j, sign = t, 1
            elif side == "before" and s > 0:
                s -= 1
                j, sign = s, -1
            else:
                continue
            # candidates: every state as it is, then every state with item j toggled; the bits
            # are gathered once, for the states that survive the step
            k = len(toggled)
            toggled.append(j)
            candidate_weight = np.concatenate([weight, weight + sign * wi[j]])
            candidate_value = np.concatenate([value, value + sign * vi[j]])
            kept = dominance_filter(candidate_weight, candidate_value)
            parent = kept % len(weight)
            moved = kept >= len(weight)
            weight, value = candidate_weight[kept], candidate_value[kept]
            # the incumbent from the states under the capacity
            feasible = weight <= capacity
            if feasible.any():
                top = int(np.argmax(np.where(feasible, value, np.iinfo(np.int64).min)))
                if value[top] > best_value:
                    best_value = int(value[top])
                    best_take = take_of(top)
            # pairing: the best state with one item after the core added, or one before removed
            # (weights sorted, values rising: the heaviest state that leaves room is the best)
            outside = np.concatenate([np.arange(t + 1, m), np.arange(s)])
            if len(weight) and len(outside):
                adds = outside > t
                room_for = np.where(adds, capacity - wi[outside], capacity + wi[outside])
                row = np.searchsorted(weight, room_for, side="right") - 1
                paired = np.where(adds, vi[outside], -vi[outside]) + value[np.maximum(row, 0)]
                paired[row < 0] = np.iinfo(np.int64).min
                pick = int(np.argmax(paired))
                if paired[pick] > best_value:
                    best_value = int(paired[pick])
                    best_take = take_of(int(row[pick]), int(outside[pick]))
            # bounds: keep a state only if it may still reach best_value + 1
            target = best_value + 1
            next_w, next_v = (int(wi[t + 1]), int(vi[t + 1])) if t + 1 < m else (1, 0)
            keep = feasible & (value * next_w + (capacity - weight) * next_v >= target * next_w)
            if s > 0:
                prev_w, prev_v = int(wi[s - 1]), int(vi[s - 1])
                over = ~feasible
                keep |= over & (value * prev_w - (weight - capacity) * prev_v >= target * prev_w)
            weight, value, parent, moved = weight[keep], value[keep], parent[keep], moved[keep]
            bits = bits[parent]
            if k // BITS_PER_WORD == bits.shape[1]:
                bits = np.concatenate([bits, np.zeros((len(bits), 1), dtype=np.uint64)], 1)
            bits[moved, k // BITS_PER_WORD] |= np.uint64(1 << (k % BITS_PER_WORD))
        if s == 0 and t == m - 1:
            break
        if len(weight) > CORE_BOUND_STATES and bounded_at != best_value:
            bounded_at = best_value
            if cardinality_bound(wi, vi, capacity, best_value + 1) <= best_value:
                break  # no solution is worth more than the incumbent
        if len(weight) > CORE_STATE_LIMIT:
            raise LabelTimeout(
                f"the core algorithm holds {len(weight)} states (limit {CORE_STATE_LIMIT})"
            )
        if time_limit is not None and time.perf_counter() - started > time_limit:
            raise LabelTimeout(
                f"the core algorithm did not prove optimality within {time_limit:g} s "
                f"({len(weight)} states, core of {t - s + 1} of {m} items)"
            )
    x[items[best_take]] = 1
    return x


def solve_combo(w, v, capacity, time_limit=None):
    """Exact labels by the C++ solver of csrc/knapsack.h (combo's algorithm: core expansion,
    dominance, state-item pairing, cardinality bounds; exact integer arithmetic); LabelTimeout
    when not proven optimal within time_limit seconds. Where the C++ op cannot be built it warns
    and runs solve_core."""
    from csrc import knapsack as exact

    if not exact.available():
        return solve_core(w, v, capacity, time_limit)
    try:
        return exact.solve(w, v, capacity, time_limit)
    except exact.TimeLimit as err:
        raise LabelTimeout(str(err)) from None


def solve_gurobi(w, v, capacity, time_limit=None):
    import gurobipy as gp

    with gp.Env(empty=True) as env:
        env.setParam("OutputFlag", 0)
        env.start()
        with gp.Model(env=env) as m:
            m.Params.MIPGap = 0.0
            m.Params.Threads = 1
            if time_limit is not None:
                m.Params.TimeLimit = time_limit
            x = m.addMVar(len(w), vtype=gp.GRB.BINARY)
            m.addConstr(w @ x <= np.floor(capacity))
            m.setObjective(v @ x, gp.GRB.MAXIMIZE)
            m.optimize()
            if m.Status == gp.GRB.TIME_LIMIT:
                raise LabelTimeout(f"Gurobi did not prove optimality within {time_limit:g} s")
            if m.Status != gp.GRB.OPTIMAL:
                raise RuntimeError(f"Gurobi status {m.Status}")
            return (x.X > 0.5).astype(np.uint8)


def gurobi_usable(n_items):
    """True when gurobipy is installed and its licence admits an n-item knapsack; else say why."""
    try:
        import gurobipy as gp
    except ImportError:
        print("gurobipy is not installed; falling back to the default solver", file=sys.stderr)
        return False
    try:
        solve_gurobi(np.ones(n_items), np.ones(n_items), 1.0)
        return True
    except gp.GurobiError as err:
        print(
            f"Gurobi cannot solve an {n_items}-item model here ({err}); its pip licence admits "
            "at most 2000 variables; falling back to the default solver",
            file=sys.stderr,
        )
        return False


SOLVE = {
    "ortools": solve_ortools,
    "core": solve_core,
    "gurobi": solve_gurobi,
    "combo": solve_combo,
}


def solve_chunk(job):
    """Worker: exact labels and seconds per instance of one chunk of instances; LabelTimeout
    naming the instance (its row `first + i`) that could not be proven optimal in time."""
    solver, w, v, capacity, time_limit, first = job
    x = np.zeros(w.shape, dtype=np.uint8)
    seconds = np.zeros(len(w))
    for i in range(len(w)):
        started = time.perf_counter()
        try:
            x[i] = SOLVE[solver](w[i], v[i], capacity[i], time_limit)
        except LabelTimeout as err:
            alpha = capacity[i] / w[i].sum()
            message = f"instance {first + i} (alpha = W/sum(w) = {alpha:.3f}): {err}"
            raise LabelTimeout(message) from None
        seconds[i] = time.perf_counter() - started
    return x, seconds


def fingerprint(w, v, capacity, solver):
    """SHA-256 of a chunk's instances and solver: a label file is only used for what it solved."""
    digest = hashlib.sha256(solver.encode())
    for array in (w, v, capacity):
        digest.update(np.ascontiguousarray(array, dtype=np.float64).tobytes())
    return digest.hexdigest()


def read_chunk(path, expected_fingerprint, n_rows, n_items):
    """One label file, checked against the instances it must belong to."""
    try:
        with np.load(path) as f:
            x, seconds, stored = f["x"], f["seconds"], str(f["fingerprint"])
    except Exception as err:
        raise SystemExit(
            f"{path}: corrupt label file ({type(err).__name__}: {str(err)[:120]}); delete it and "
            "run again to re-solve its instances"
        ) from None
    if stored != expected_fingerprint or x.shape != (n_rows, n_items):
        raise SystemExit(
            f"{path}: these labels belong to other instances or another solver; delete the file "
            "(or its folder) and run again"
        )
    return x, seconds


def solve_missing_chunks(
    w, v, capacity, folder, solver, workers, chunk, time_limit=DEFAULT_TIME_LIMIT
):
    common.remove_stale_temporaries(folder)
    chunks = [(lo, min(lo + chunk, len(w))) for lo in range(0, len(w), chunk)]

    def path(lo):
        return os.path.join(folder, f"chunk_{lo:07d}.npz")

    def print_of(lo, hi):
        return fingerprint(w[lo:hi], v[lo:hi], capacity[lo:hi], solver)

    todo = [(lo, hi) for lo, hi in chunks if not os.path.exists(path(lo))]
    if todo:
        jobs = [(solver, w[lo:hi], v[lo:hi], capacity[lo:hi], time_limit, lo) for lo, hi in todo]
        n_todo = sum(hi - lo for lo, hi in todo)
        context = mp.get_context("spawn")
        with (
            context.Pool(min(workers, len(todo))) as pool,
            tqdm(total=n_todo, desc=f"labels ({solver})", unit="inst") as bar,
        ):
            try:
                for (lo, hi), (x, seconds) in zip(todo, pool.imap(solve_chunk, jobs), strict=True):
                    buffer = io.BytesIO()
                    np.savez(buffer, x=x, seconds=seconds, fingerprint=print_of(lo, hi))
                    common.atomic_write_bytes(path(lo), buffer.getvalue())
                    bar.update(hi - lo)
            except LabelTimeout as err:
                other = [name for name in SOLVERS if name != solver]
                raise SystemExit(
                    f"labels in {folder}: {err}. Raise --time-limit, or try --solver "
                    f"{' or '.join(other)}"
                ) from None
    parts = [read_chunk(path(lo), print_of(lo, hi), hi - lo, w.shape[1]) for lo, hi in chunks]
    x = np.concatenate([part[0] for part in parts]).astype(np.float64)
    seconds = np.concatenate([part[1] for part in parts])
    bad = np.nonzero((x * w).sum(1) > capacity)[0]
    if len(bad):
        raise SystemExit(f"labels in {folder} violate the capacity of instances {bad[:5]}")
    return x, (x * v).sum(1), seconds


def make_labels(
    w, v, capacity, folder, solver, workers, chunk=LABEL_CHUNK, time_limit=DEFAULT_TIME_LIMIT
):
    """Exact labels, solved in chunks by worker processes; each chunk is written atomically with
    the fingerprint of its instances, so an interrupted run resumes where it stopped and a file
    from other instances is refused. An instance not proven optimal within time_limit seconds
    stops the run with an error naming it (the chunks solved so far are kept). Returns x (S, n),
    optimal values, seconds per instance."""
    with common.folder_lock(folder, "these labels"):
        return solve_missing_chunks(w, v, capacity, folder, solver, workers, chunk, time_limit)


def data_folder(data_dir, n_items, n_instances, seed, value_range, distribution="uncorrelated"):
    """Where one class's instances keep their labels: data/knapsack/<class>_R<R>_n_S_seed
    (similar-weights has no R: its ranges are fixed)."""
    data_range = "" if distribution == "similar-weights" else f"_R{value_range}"
    name = f"{distribution}{data_range}_n{n_items}_S{n_instances}_seed{seed}"
    return os.path.join(data_dir, "knapsack", name)


def load_data(args, n_items=None, n_instances=None, seed=None):
    """Instances, split and labels for these flags, from the cache in --data-dir when present."""
    n_items = n_items or args.items
    n_instances = n_instances or args.instances
    seed = args.seed if seed is None else seed
    # checkpoints of older runs have neither a class (all were uncorrelated) nor a time limit
    distribution = getattr(args, "distribution", "uncorrelated")
    time_limit = getattr(args, "time_limit", DEFAULT_TIME_LIMIT)
    w, v, capacity = make_instances(n_items, n_instances, seed, args.value_range, distribution)
    solver = args.solver or default_solver(distribution)
    if solver == "gurobi" and not gurobi_usable(n_items):
        solver = default_solver(distribution)
    folder = data_folder(args.data_dir, n_items, n_instances, seed, args.value_range, distribution)
    labels = os.path.join(folder, f"labels_{solver}")
    parts = split(n_instances, seed)
    started = time.perf_counter()
    if getattr(args, "supervision", "labels") == "none" and not os.path.isdir(labels):
        # label-free training: solve only the validation and test instances, for evaluation
        rows = np.concatenate([parts["val"], parts["test"]])
        x = np.full(w.shape, np.nan)
        opt = np.full(len(w), np.nan)
        seconds = np.full(len(w), np.nan)
        x[rows], opt[rows], seconds[rows] = make_labels(
            w[rows],
            v[rows],
            capacity[rows],
            labels + "_valtest",
            solver,
            args.workers,
            time_limit=time_limit,
        )
    else:
        x, opt, seconds = make_labels(
            w, v, capacity, labels, solver, args.workers, time_limit=time_limit
        )
    return {
        "w": w,
        "v": v,
        "capacity": capacity,
        "x": x,
        "opt": opt,
        "solve_seconds": seconds,
        "solver": solver,
        "label_wall_seconds": time.perf_counter() - started,
        "split": parts,
    }


def features(data):
    """Raw inputs [w, v, W] as one float32 tensor (S, 2n+1)."""
    raw = np.concatenate([data["w"], data["v"], data["capacity"][:, None]], 1)
    return torch.from_numpy(raw).float()


# ====================================================================== 3. model
class SetModel(nn.Module):
    """Permutation-equivariant scorer (beyond the thesis): every item is scored by one shared MLP
    from its own scale-free features and the instance's context (alpha = W/sum(w), pooled item
    embeddings), so permuting the items permutes the logits and one model serves any n. One item
    feature is the share of the capacity taken by the items with a better value/weight ratio."""

    ITEM_FEATURES = 6

    def __init__(self, hidden=64):
        super().__init__()
        self.item = nn.Sequential(
            nn.Linear(self.ITEM_FEATURES, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
        )
        self.score = nn.Sequential(
            nn.Linear(2 * hidden + 1, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 1),
        )

    def forward(self, raw):
        n = (raw.shape[1] - 1) // 2
        w = raw[:, :n]
        v = raw[:, n : 2 * n]
        capacity = raw[:, 2 * n :]
        ratio = v / w.clamp_min(1e-9)
        order = torch.argsort(ratio, dim=1, descending=True)
        w_sorted = torch.gather(w, 1, order)
        better_sorted = torch.cumsum(w_sorted, 1) - w_sorted
        better = torch.empty_like(better_sorted).scatter_(1, order, better_sorted) / capacity
        alpha = capacity / w.sum(1, keepdim=True)
        features = [
            w * n / w.sum(1, keepdim=True),
            v * n / v.sum(1, keepdim=True),
            torch.log(ratio.clamp_min(1e-9)),
            w / capacity,
            better,
            better + w / capacity,
        ]
        h = self.item(torch.stack(features, -1))
        context = torch.cat([h.mean(1, keepdim=True), alpha[:, :, None]], -1).expand(-1, n, -1)
        return self.score(torch.cat([h, context], -1)).squeeze(-1)


def make_model(n_items, arch="fc"):
    """The thesis' FC network: [w, v, W] (2n+1) -> 2048 -> 1024 -> n logits, ReLU then batch
    norm."""
    if arch == "set":
        return SetModel()
    return nn.Sequential(
        nn.Linear(2 * n_items + 1, 2048),
        nn.ReLU(),
        nn.BatchNorm1d(2048),
        nn.Linear(2048, 1024),
        nn.ReLU(),
        nn.BatchNorm1d(1024),
        nn.Linear(1024, n_items),
    )


def normaliser(raw, n_items, arch="fc"):
    """Min-max scaling per input group (weights, values, capacity) to [0, 1], as the thesis code
    did, but from the training rows only (the thesis took the whole data set). The set model
    builds scale-free features itself and gets the raw inputs."""
    if arch == "set":
        return {"mean": torch.zeros(()), "std": torch.ones(())}
    groups = [slice(0, n_items), slice(n_items, 2 * n_items), slice(2 * n_items, 2 * n_items + 1)]
    low = torch.empty(raw.shape[1])
    span = torch.empty(raw.shape[1])
    for group in groups:
        low[group] = raw[:, group].min()
        span[group] = (raw[:, group].max() - raw[:, group].min()).clamp_min(1e-12)
    return {"mean": low, "std": span}  # x_norm = (x - mean) / std for either scaling


@torch.no_grad()
def predict(model, x_norm, bf16=False, batch=4096):
    """Logits (float32) of the model in evaluation mode."""
    model.eval()
    device_type = next(model.parameters()).device.type
    outputs = []
    for start in range(0, len(x_norm), batch):
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
            outputs.append(model(x_norm[start : start + batch]).float())
    return torch.cat(outputs)


# ====================================================================== 4. loss
def violation(x, w, capacity, unit="raw"):
    """nu = max(0, sum_i x_i w_i - W) per instance: in weight units (raw, the thesis code) or
    relative to the capacity W."""
    overshoot = torch.relu((x * w).sum(-1) - capacity)
    return overshoot / capacity if unit == "relative" else overshoot


def batch_loss(logits, y, w, capacity, multiplier, k, ldf, unit="raw", v=None):
    """Per instance: BCE on the labels (mean over items) and, for LDF, the violation of the
    surrogate-rounded prediction; the loss is the batch mean of BCE + lambda * violation.
    Label-free (y is None): the negated objective of the relaxed prediction p = sigmoid(logits),
    as a share of the instance's total value, plus lambda * the LP violation of p."""
    if y is None:
        p = torch.sigmoid(logits)
        objective = -(p * v).sum(-1) / v.sum(-1)
        nu = violation(p, w, capacity, unit)
        return (objective + multiplier * nu).mean(), objective, nu
    label = F.binary_cross_entropy_with_logits(logits, y, reduction="none").mean(-1)
    if not ldf:
        return label.mean(), label, torch.zeros_like(label)
    nu = violation(common.round_surrogate(torch.sigmoid(logits), k), w, capacity, unit)
    return (label + multiplier * nu).mean(), label, nu


# ====================================================================== 5. measures
def total_weight(x, w):
    """sum_i x_i w_i per instance: the one sum that decides feasibility, in the tables and in the
    decoders alike."""
    return (x * w).sum(-1)


def solution_metrics(xhat, data, rows, unit="raw"):
    """Objective, violation and AR (eq. 14) of 0/1 solutions xhat for instances `rows`; nu in the
    training unit, nu_pct in % of W (the tables')."""
    w = data["w"][rows]
    v = data["v"][rows]
    capacity = data["capacity"][rows]
    opt = data["opt"][rows]
    obj = (xhat * v).sum(1)
    overshoot = np.maximum(0.0, total_weight(xhat, w) - capacity)
    nu = overshoot / capacity if unit == "relative" else overshoot
    return {
        "obj": obj,
        "nu": nu,
        "nu_pct": 100
        * np.divide(overshoot, capacity, out=np.zeros_like(overshoot), where=capacity > 0),
        "ar": common.approximation_ratio(obj, opt),
        "opt": opt,
    }


# ====================================================================== 6. train
def selection(args):
    """The criterion whose best checkpoint is the model: LDF's mu-loss, FC's validation AR."""
    return f"mu{args.select_mu:g}" if args.model == "ldf" else "ar"


def dual_options(args, x_norm):
    """common.LagrangianDual's keywords for --dual: rho, or the dual network's inputs and lr."""
    if args.dual == "augmented":
        return {"rho": args.rho}
    if args.dual == "dual-net":
        return {"features": x_norm, "dual_lr": args.dual_lr}
    return {}


# Settings that may change between a run and its resumption (they do not change what is learnt).
RESUME_FREE = {
    "epochs",
    "select_mu",
    "patience",
    "out",
    "device",
    "threads",
    "workers",
    "fresh",
    "eval_only",
    "labels_only",
    "grid",
    "grid_lr",
    "grid_step",
    "grid_max_grad_norm",
    "data_dir",
    "decode",
    "eval_items",
    "eval_instances",
    "tradeoff",
    "time_limit",
}


def resume_fingerprint(config):
    fingerprint = {k: v for k, v in config.items() if k not in RESUME_FREE}
    if fingerprint.get("distribution") == "uncorrelated":
        del fingerprint["distribution"]  # runs from before --distribution (all uncorrelated) resume
    if fingerprint.get("dual", "scalar") == "scalar":  # runs from before --dual resume
        for name in ("dual", "rho", "dual_lr"):
            fingerprint.pop(name, None)
    if not fingerprint.get("fused_adam", False):  # runs from before --fused-adam resume
        fingerprint.pop("fused_adam", None)
    return {"problem": "knapsack"} | fingerprint


def train(args, data, out):
    """Train one model with the shared LDF loop, common.train_ldf; returns (state, selected)."""
    common.keep_freed_memory()  # no page faults for each step's large tensors (bit-identical)
    device = common.pick_device(args.device)
    bf16 = use_bf16(args.precision, device)
    n = data["w"].shape[1]
    ldf = args.model == "ldf"
    supervised = args.supervision == "labels"
    raw = features(data)
    idx = data["split"]
    pretrained = common.load_checkpoint(args.pretrained) if args.pretrained else None
    if pretrained and pretrained.get("n_items") != n:
        raise SystemExit(
            f"--pretrained {args.pretrained}: trained for n={pretrained.get('n_items')} items, "
            f"this run has n={n}"
        )
    config = dict(vars(args))
    resume = common.resume_checkpoint(out, resume_fingerprint(config), args.fresh)
    if resume:
        norm = resume["norm"]
    elif pretrained:
        norm = pretrained["norm"]
    else:
        norm = normaliser(raw[idx["train"]], n, args.arch)
    x_norm = ((raw - norm["mean"]) / norm["std"]).to(device)
    y = torch.from_numpy(data["x"]).float().to(device)
    w = raw[:, :n].to(device)
    v = raw[:, n : 2 * n].to(device)
    capacity = raw[:, 2 * n].to(device)
    train_rows = torch.from_numpy(idx["train"]).to(device)
    val_rows = idx["val"]

    common.set_seed(args.seed)
    model = make_model(n, args.arch).to(device)
    if pretrained:
        model.load_state_dict(pretrained["model"])
    # --fused-adam: torch's one-kernel Adam (not bit-identical to the default, so asked for)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=args.lr, fused=getattr(args, "fused_adam", False) or None
    )

    def loss_of(rows, multiplier):
        rows = torch.from_numpy(rows).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(x_norm[rows]).float()
        return batch_loss(
            logits,
            y[rows] if supervised else None,
            w[rows],
            capacity[rows],
            multiplier,
            args.k,
            ldf,
            args.violation,
            v[rows],
        )

    def validate():
        logits = predict(model, x_norm[val_rows], bf16)
        xhat = (logits > 0).double().cpu().numpy()  # round(sigmoid(logit)) without the sigmoid
        metrics = solution_metrics(xhat, data, val_rows, args.violation)
        if supervised:  # label loss summed over items, as the thesis' mu-loss
            bce = F.binary_cross_entropy_with_logits(logits, y[val_rows], reduction="none")
            label = bce.sum(1).cpu().numpy()
        else:  # label-free selection: the negated objective share of the rounded prediction
            label = -metrics["obj"] / data["v"][val_rows].sum(1)
        return {
            "ar": metrics["ar"].mean(),
            "label_loss": label,
            "violation": metrics["nu"],
            "violated": (metrics["nu"] > 0).mean(),
        }

    def training_violations():  # Algorithm 1: hard-rounded predictions of the training set
        xhat = (predict(model, x_norm[train_rows], bf16) > 0).float()
        return violation(xhat, w[train_rows], capacity[train_rows], args.violation)

    def training_violation_sum():
        return training_violations().sum().item()

    mu_names = [f"mu{mu:g}" for mu in args.mu]
    track = ["ar", "loss"] + (mu_names if ldf else [])  # the thesis' stopping criteria
    select = selection(args)
    saved = {"norm": norm, "config": config, "n_items": n}
    settings = common.LDFSettings(
        ldf=ldf,
        epochs=args.epochs,
        patience=args.patience,
        batch_size=args.batch_size,
        max_grad_norm=args.max_grad_norm,
        lambda0=args.lambda0,
        step=args.step,
        mus=tuple(args.mu),
        select=select,
        track=tuple(track),
        seed=args.seed,
        dual=args.dual,
        dual_options=dual_options(args, x_norm),
    )
    try:
        return common.train_ldf(
            model,
            optimizer,
            idx["train"],
            loss_of,
            validate,
            out,
            settings,
            saved=saved,
            fingerprint=resume_fingerprint(config),
            resume=resume,
            violation_sum=training_violation_sum if ldf else None,
            training_violations=(lambda: training_violations().cpu().numpy()) if ldf else None,
        )
    except common.TrainingDiverged as err:
        raise SystemExit(f"{err}") from None


# ====================================================================== 7. evaluate
def fill_in_order(w, capacity, x, order, eligible):
    """Scan each instance's items in `order`; take every eligible item that still fits by a
    running sum, then undo the latest takes of any instance whose total_weight (a sum in another
    order, which can differ in the last bit when weights are not exact binary numbers) exceeds W."""
    rows = np.arange(len(w))
    remaining = capacity - total_weight(x, w)
    takes = []
    for position in range(w.shape[1]):
        item = order[:, position]
        wi = w[rows, item]
        take = eligible[rows, item] & (wi <= remaining)
        x[rows[take], item[take]] = 1.0
        remaining = remaining - take * wi
        takes.append((item, take))
    for item, take in reversed(takes):
        over = total_weight(x, w) > capacity
        if not over.any():
            break
        undo = take & over
        x[rows[undo], item[undo]] = 0.0
    return x


def greedy(w, v, capacity):
    """Value/weight greedy: scan items by falling v/w and take each one that still fits."""
    order = np.argsort(-v / w, axis=1, kind="stable")
    return fill_in_order(w, capacity, np.zeros_like(w), order, np.ones(w.shape, dtype=bool))


def repair(prob, w, v, capacity):
    """Repair decoding (beyond the thesis): the items the model picks (p > 0.5), by falling p,
    while they fit; then the rest of the capacity greedily by v/w. Always feasible, and a superset
    of a feasible raw prediction (so never a lower objective)."""
    by_probability = np.argsort(-prob, axis=1, kind="stable")
    x = fill_in_order(w, capacity, np.zeros_like(w), by_probability, prob > 0.5)
    by_ratio = np.argsort(-v / w, axis=1, kind="stable")
    return fill_in_order(w, capacity, x, by_ratio, x == 0)


SWAP_ROUNDS = 20  # improving moves (exchanges or additions) per instance at most


def improve_by_swaps(x, w, v, capacity, rounds=SWAP_ROUNDS):
    """Local search after a feasible decode (beyond the thesis): per instance, the move that gains
    the most value among exchanging a chosen item i for an unchosen j that fits the room left
    (w_j - w_i <= W - sum) and adding an unchosen j that fits, repeated while a move gains (at most
    `rounds` moves). Feasible in, feasible out; never a lower objective. This is what closes
    greedy's gap on the strongly correlated classes, where the optimum is a tighter fill of the
    same number of items.

    All instances at once: per instance the unchosen items sorted by weight with the running
    maximum of their values, so the best partner of a chosen item i is found by one binary search
    for w_i + room (an addition: for the room alone)."""
    x = x.copy()
    n_items = w.shape[1]
    positions = np.arange(n_items)
    above_any_bound = w.max() + capacity.max() + 1.0
    active = np.arange(len(x))
    for _ in range(rounds):
        rows = active
        chosen = x[rows] > 0
        room = capacity[rows] - total_weight(x[rows], w[rows])
        unchosen_weight = np.where(chosen, above_any_bound, w[rows])
        order = np.argsort(unchosen_weight, axis=1, kind="stable")
        sorted_weight = np.take_along_axis(unchosen_weight, order, 1)
        sorted_value = np.take_along_axis(np.where(chosen, -np.inf, v[rows]), order, 1)
        best_value = np.maximum.accumulate(sorted_value, axis=1)
        best_position = np.maximum.accumulate(
            np.where(sorted_value >= best_value, positions, 0), axis=1
        )
        # the bounds: w_i + room for each chosen item i, then the room alone (an addition)
        bound = np.concatenate([w[rows] + room[:, None], room[:, None]], 1)
        fitting = np.stack(
            [np.searchsorted(sorted_weight[k], bound[k], side="right") for k in range(len(rows))]
        )
        last = np.maximum(fitting - 1, 0)
        partner_value = np.where(fitting > 0, np.take_along_axis(best_value, last, 1), -np.inf)
        given_up = np.concatenate([np.where(chosen, v[rows], np.inf), np.zeros((len(rows), 1))], 1)
        gain = partner_value - given_up
        move = gain.argmax(1)
        index = np.arange(len(rows))
        improving = gain[index, move] > 0
        partner = order[index, np.take_along_axis(best_position, last, 1)[index, move]]
        swapping = improving & (move < n_items)
        x[rows[swapping], move[swapping]] = 0.0
        x[rows[improving], partner[improving]] = 1.0
        active = rows[improving]
        if not len(active):
            break
    return x


def summarise(metrics, mask):
    """One table row (thesis Tables 2-4) over the instances in mask."""
    obj = metrics["obj"][mask]
    opt = metrics["opt"][mask]
    nu_pct = metrics["nu_pct"][mask]
    ar = metrics["ar"][mask]
    violated_pct = nu_pct[nu_pct > 0]
    if len(violated_pct) > 1:  # the thesis ignored violations more than 6 sigma from the mean
        distance = np.abs(violated_pct - violated_pct.mean())
        violated_pct = violated_pct[distance <= 6 * violated_pct.std()]
    under = obj < opt
    over = obj > opt

    def mean_distance(selected):
        if not selected.any():
            return None
        return float(np.mean(100 * np.abs(obj[selected] - opt[selected]) / opt[selected]))

    return {
        "n": int(mask.sum()),
        "pct_violated": 100 * float((nu_pct > 0).mean()) if len(nu_pct) else 0.0,
        "mean_violation_pct_of_W": float(violated_pct.mean()) if len(violated_pct) else None,
        "pct_under": 100 * float(under.mean()) if len(obj) else 0.0,
        "pct_over": 100 * float(over.mean()) if len(obj) else 0.0,
        "avg_over_pct": mean_distance(over),
        "avg_under_pct": mean_distance(under),
        "ar": float(ar.mean()) if len(ar) else None,
    }


def quintile_masks(alpha):
    masks = []
    for q in range(QUINTILES):
        upper = alpha < (q + 1) / QUINTILES if q < QUINTILES - 1 else alpha <= 1
        masks.append((alpha >= q / QUINTILES) & upper)
    return masks


def table(metrics, alpha):
    return {
        "all": summarise(metrics, np.ones_like(alpha, dtype=bool)),
        "quintiles": [summarise(metrics, mask) for mask in quintile_masks(alpha)],
    }


TABLE_HEAD = (
    "| model | alpha = W/sum(w) | n | % violated | mean violation (% of W) | % under | % over "
    "| Avg-O % | Avg-U % | AR |"
)
TABLE_KEYS = (
    "pct_violated",
    "mean_violation_pct_of_W",
    "pct_under",
    "pct_over",
    "avg_over_pct",
    "avg_under_pct",
    "ar",
)


def cell(value, digits):
    return "N/A" if value is None else f"{value:.{digits}f}"


def quintile_label(q):
    return f"{q / QUINTILES:.1f}-{(q + 1) / QUINTILES:.1f}" if q < QUINTILES else "all"


def markdown(rows):
    """rows: list of (name, table). One Markdown table in the thesis' columns, quintile rows then
    'all', per model; a table may be the thesis' own (a list of 6 tuples)."""
    lines = [TABLE_HEAD, "|" + "---|" * 10]
    for name, tab in rows:
        for q in range(QUINTILES + 1):
            if isinstance(tab, list):  # the thesis' row
                values = list(tab[q])
                n = ""
            else:
                row = tab["quintiles"][q] if q < QUINTILES else tab["all"]
                values = [row[key] for key in TABLE_KEYS]
                n = str(row["n"])
            cells = [cell(value, 2) for value in values[:-1]] + [cell(values[-1], 4)]
            lines.append(f"| {name} | {quintile_label(q)} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def load_model(ckpt_path):
    checkpoint = common.load_checkpoint(ckpt_path)
    if checkpoint.get("fingerprint", {}).get("problem") != "knapsack":
        raise SystemExit(f"{ckpt_path}: not a knapsack checkpoint of knapsack_ldf.py")
    model = make_model(checkpoint["n_items"], checkpoint["config"].get("arch", "fc"))
    model.load_state_dict(checkpoint["model"])
    return model, checkpoint


def evaluate_tables(model, checkpoint, data, rows, bf16=False):
    """Raw, repaired and greedy tables of one model on instances `rows`, and times per instance."""
    unit = checkpoint["config"].get("violation", "raw")
    device = next(model.parameters()).device
    x_norm = (features(data)[rows] - checkpoint["norm"]["mean"]) / checkpoint["norm"]["std"]
    x_norm = x_norm.to(device)
    w = data["w"][rows]
    v = data["v"][rows]
    capacity = data["capacity"][rows]
    alpha = capacity / w.sum(1)
    predict(model, x_norm[:2], bf16)  # warm-up: the first call pays for kernel selection
    started = time.perf_counter()
    logits = predict(model, x_norm, bf16)
    xhat = (logits > 0).double().cpu().numpy()
    network_ms = 1000 * (time.perf_counter() - started) / len(rows)
    started = time.perf_counter()
    x_repaired = repair(torch.sigmoid(logits).double().cpu().numpy(), w, v, capacity)
    repair_ms = network_ms + 1000 * (time.perf_counter() - started) / len(rows)
    started = time.perf_counter()
    x_swapped = improve_by_swaps(x_repaired, w, v, capacity)
    swap_ms = repair_ms + 1000 * (time.perf_counter() - started) / len(rows)
    started = time.perf_counter()
    x_greedy = greedy(w, v, capacity)
    greedy_ms = 1000 * (time.perf_counter() - started) / len(rows)
    started = time.perf_counter()
    x_greedy_swapped = improve_by_swaps(x_greedy, w, v, capacity)
    greedy_swap_ms = greedy_ms + 1000 * (time.perf_counter() - started) / len(rows)
    times = {
        "solver": data["solver"],
        "solver_ms_per_instance": 1000 * float(np.nanmean(data["solve_seconds"][rows])),
        "network_ms_per_instance": network_ms,
        "repair_ms_per_instance": repair_ms,
        "swap_ms_per_instance": swap_ms,
        "greedy_ms_per_instance": greedy_ms,
        "greedy_swap_ms_per_instance": greedy_swap_ms,
        "precision": "bf16" if bf16 else "fp32",
    }
    return {
        "test_raw": table(solution_metrics(xhat, data, rows, unit), alpha),
        "test_repair": table(solution_metrics(x_repaired, data, rows, unit), alpha),
        "test_swap": table(solution_metrics(x_swapped, data, rows, unit), alpha),
        "greedy": table(solution_metrics(x_greedy, data, rows, unit), alpha),
        "greedy_swap": table(solution_metrics(x_greedy_swapped, data, rows, unit), alpha),
        "times": times,
    }


def greedy_row(data, rows=None):
    """Greedy v/w on instances `rows` (default: all): its table row ('all') and ms per instance."""
    rows = np.arange(len(data["w"])) if rows is None else rows
    w, v, capacity = data["w"][rows], data["v"][rows], data["capacity"][rows]
    started = time.perf_counter()
    x = greedy(w, v, capacity)
    ms = 1000 * (time.perf_counter() - started) / len(rows)
    metrics = solution_metrics(x, data, rows)
    return summarise(metrics, np.ones(len(rows), dtype=bool)) | {"ms_per_instance": ms}


def print_tables(title, name, result, thesis_name=None):
    rows = [
        (name, result["test_raw"]),
        (name + " repaired", result["test_repair"]),
        (name + " repaired + swaps", result["test_swap"]),
        ("greedy v/w", result["greedy"]),
        ("greedy v/w + swaps", result["greedy_swap"]),
    ]
    if thesis_name in THESIS_TABLES:
        rows.insert(1, (f"thesis {thesis_name}", THESIS_TABLES[thesis_name]))
    md = markdown(rows)
    times = result["times"]
    md += (
        f"\n\nper instance: exact {times['solver']} {times['solver_ms_per_instance']:.3f} ms | "
        f"network {times['network_ms_per_instance']:.4f} ms (batched, {times['precision']}) | "
        f"with repair {times['repair_ms_per_instance']:.4f} ms | "
        f"repair + swaps {times['swap_ms_per_instance']:.4f} ms | "
        f"greedy {times['greedy_ms_per_instance']:.4f} ms | "
        f"greedy + swaps {times['greedy_swap_ms_per_instance']:.4f} ms"
    )
    print(f"\n## {title}\n\n{md}")
    return md


def report(
    ckpt_path, data, out, extra=None, decode="raw", eval_data=(), precision="auto", stem="results"
):
    """Test-split tables of a checkpoint (raw and repaired) beside the thesis' and greedy, printed
    as Markdown and written to <out>/<stem>.md and .json; eval_data: more (n, data) to evaluate
    on without retraining."""
    model, checkpoint = load_model(ckpt_path)
    device = torch.device("cpu")
    bf16 = use_bf16(precision, device)
    name = run_name(checkpoint["config"])
    rows = data["split"]["test"]
    result = evaluate_tables(model, checkpoint, data, rows, bf16)
    results = {
        "model": name,
        "checkpoint": os.path.abspath(ckpt_path),
        "epoch": checkpoint["epoch"],
        "selected_by": checkpoint.get("selected_by"),
        "config": checkpoint["config"],
        "decode": decode,
        "test": result["test_" + decode],
        **result,
        **(extra or {}),
    }
    title = (
        f"Test split ({len(rows)} instances, n={checkpoint['n_items']}): {name} from {ckpt_path} "
        f"(epoch {checkpoint['epoch']}, selected by {checkpoint.get('selected_by')})"
    )
    config = checkpoint["config"]
    thesis_data = config.get("value_range") == THESIS_VALUE_RANGE
    thesis_data &= config.get("distribution", "uncorrelated") == "uncorrelated"
    thesis_name = (
        run_name({**config, "dual": "scalar", "pretrain_epochs": None}) if thesis_data else None
    )
    md = print_tables(title, name, result, thesis_name)
    for n, other in eval_data:
        every = np.arange(len(other["w"]))
        results.setdefault("other_n", {})[str(n)] = other_result = evaluate_tables(
            model, checkpoint, other, every, bf16
        )
        title = f"n={n} ({len(every)} fresh instances, no retraining)"
        md += "\n\n" + print_tables(title, name, other_result)
    common.atomic_write_json(os.path.join(out, stem + ".json"), results)
    common.atomic_write_bytes(os.path.join(out, stem + ".md"), (md + "\n").encode())
    return results


def plots(history, out, k):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = torch.linspace(0, 1, 401)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for sharpness in sorted({5.0, 15.0, 25.0, float(k)}):
        ax.plot(p, common.sigmoid_slope(p, 0.5, sharpness), label=f"k={sharpness:g}")
    ax.set(
        xlabel="sigmoid(logit)",
        ylabel="surrogate d round / dp",
        title="Figure 1: rounding surrogate (eq. 13)",
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out, "fig1_surrogate.png"), dpi=120)
    plt.close(fig)
    if not history:
        return
    epochs = [h["epoch"] for h in history]
    panels = [
        (("loss", "label_loss"), "training loss", "log"),
        (("val_ar",), "validation AR", "log"),
        (("val_violated",), "validation: share violated", "linear"),
        (("multiplier",), "lambda", "linear"),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(16, 3.5))
    for ax, (keys, title, scale) in zip(axes, panels, strict=True):
        for key in keys:
            ax.plot(epochs, [h[key] for h in history], label=key)
        ax.set(title=title, xlabel="epoch", yscale=scale)
        if len(keys) > 1:
            ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out, "training_curves.png"), dpi=120)
    plt.close(fig)


def tradeoff(folder):
    """Beyond the thesis: AR against % violated of every run under folder, raw and repaired."""
    import glob

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = sorted(glob.glob(os.path.join(folder, "**", "results.json"), recursive=True))
    runs = []
    for path in paths:
        with open(path) as f:
            runs.append(json.load(f))
    if not runs:
        raise SystemExit(f"--tradeoff: no results.json under {folder}")
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for decode, marker in [("raw", "o"), ("repair", "s")]:
        key = "test_" + decode
        points = [(r[key]["all"], r["model"], r["config"]) for r in runs if key in r]
        ax.scatter(
            [row["pct_violated"] for row, _, _ in points],
            [row["ar"] - 1 for row, _, _ in points],
            marker=marker,
            label=decode,
        )
        for row, name, cfg in points:
            label = f"{name} s={cfg['step']:g}"
            ax.annotate(label, (row["pct_violated"], row["ar"] - 1), fontsize=6)
    greedy_all = runs[0]["greedy"]["all"]
    greedy_point = ([greedy_all["pct_violated"]], [greedy_all["ar"] - 1])
    ax.scatter(*greedy_point, marker="*", s=120, label="greedy v/w")
    ax.set(
        xlabel="% of test instances violated",
        ylabel="mean AR - 1 (eq. 14), log scale",
        yscale="log",
        title="optimality-feasibility trade-off",
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(folder, "tradeoff.png"), dpi=130)
    print(f"wrote {os.path.join(folder, 'tradeoff.png')} from {len(runs)} runs")


def train_and_report(args, data):
    state, selected = train(args, data, args.out)
    if not os.path.exists(selected):
        raise SystemExit(f"no checkpoint was selected in {args.out} (stopped: {state['stopped']})")
    final = os.path.join(args.out, f"{args.model}.pt")
    with open(selected, "rb") as f:
        common.atomic_write_bytes(final, f.read())
    plots(state["history"], args.out, args.k)
    select = selection(args)
    _, best_epoch, best_seconds = state["best"][select]
    extra = {
        "stopped": state["stopped"],
        "epochs_run": state["epoch"],
        "train_seconds": state["train_seconds"],
        "selected_epoch": best_epoch,
        "seconds_to_selected": best_seconds,
        "label_wall_seconds": data["label_wall_seconds"],
        "history": state["history"],
    }
    labelled = argparse.Namespace(**{**vars(args), "supervision": "labels"})
    eval_data = [
        (n, load_data(labelled, n, args.eval_instances, args.seed + EVAL_SEED_OFFSET))
        for n in args.eval_items
    ]
    results = report(final, data, args.out, extra, args.decode, eval_data, args.precision)
    kind = model_kind(vars(args))
    thesis_epochs, thesis_minutes = THESIS_TRAINING.get(kind, (None, None))
    print(
        f"\ntraining: {state['epoch']} epochs in {state['train_seconds'] / 60:.1f} min "
        f"(stopped: {state['stopped']}); selected epoch {best_epoch} ({select}), reached after "
        f"{best_seconds / 60:.2f} min"
        + (f" (thesis: {thesis_epochs} epochs, {thesis_minutes} min)" if thesis_epochs else "")
        + f"\ncheckpoint {final}; plots and results.json in {args.out}"
    )
    return results


def run(args, data):
    """Train one model, keep its selected checkpoint as <out>/<model>.pt, report and plot; with
    --pretrain-epochs first the FC it starts from."""
    if args.pretrain_epochs:
        run(pretraining(args), data)
    with common.folder_lock(args.out, "this output folder"):
        return train_and_report(args, data)


def pretraining(args):
    """The FC run --pretrain-epochs asks for: the thesis' FC settings, into <out>/fc."""
    fc = {**vars(args), **THESIS_SETTINGS["fc"], "model": "fc", "pretrained": None}
    fc.update(epochs=args.pretrain_epochs, pretrain_epochs=None, dual="scalar", rho=None)
    fc.update(out=os.path.dirname(args.pretrained), mu=[*args.mu], select_mu=args.select_mu)
    return argparse.Namespace(**fc)


def grid_trial(settings):
    """One grid trial (a Dask task): read the cached data, train and report in
    settings["out"] -> the Table 1 row. Each worker process trains with `threads` torch threads."""
    args = argparse.Namespace(**settings)
    common.set_threads(args.threads)
    result = run(args, load_data(args))
    checkpoint = common.load_checkpoint(os.path.join(args.out, f"{args.model}.pt"))
    return {
        "lr": args.lr,
        "step": args.step,
        "max_grad_norm": args.max_grad_norm,
        "selected_by": checkpoint["selected_by"],
        "val_value": checkpoint["value"],
        "test_ar": result["test"]["all"]["ar"],
        "test_pct_violated": result["test"]["all"]["pct_violated"],
    }


def grid(args, data):
    """Thesis Table 1: every lr x step x max-grad-norm, each selected on validation, one table.
    The trials run as tasks on Dask: a local cluster of --workers processes (the cores shared out
    as torch threads) or the scheduler at --cluster; the labels are made first, here."""
    from dask.distributed import as_completed

    import knapsack_ldf  # workers import the module by name

    steps = args.grid_step if args.model == "ldf" else [0.0]
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.workers)
    trials = []
    for lr, step, grad_norm in itertools.product(args.grid_lr, steps, args.grid_max_grad_norm):
        folder = os.path.join(args.out, f"lr{lr:g}_step{step:g}_gn{grad_norm:g}")
        settings = {**vars(args), "lr": lr, "step": step, "max_grad_norm": grad_norm}
        trials.append(dict(settings, out=folder, threads=threads, grid=False))
    print(f"grid: {len(trials)} trials on Dask ({args.cluster or f'{args.workers} local workers'})")
    rows = []
    with common.dask_client(args.workers, args.cluster) as client:
        futures = [client.submit(knapsack_ldf.grid_trial, trial, pure=False) for trial in trials]
        for future in as_completed(futures):
            rows.append(future.result())
            row = rows[-1]
            print(
                f"grid trial {len(rows)}/{len(trials)} done: lr {row['lr']:g}, step "
                f"{row['step']:g}, max grad norm {row['max_grad_norm']:g}: test AR "
                f"{row['test_ar']:.5f}, {row['test_pct_violated']:.2f} % violated"
            )
    rows.sort(key=lambda row: row["val_value"])
    lines = [
        "| lr | step | max grad norm | validation criterion | value | test AR | test % violated |",
        "|---" * 7 + "|",
    ]
    for row in rows:
        lines.append(
            f"| {row['lr']:g} | {row['step']:g} | {row['max_grad_norm']:g} | "
            f"{row['selected_by']} | {row['val_value']:.5f} | {row['test_ar']:.5f} | "
            f"{row['test_pct_violated']:.2f} |"
        )
    print("\n## Grid (best first)\n\n" + "\n".join(lines))
    common.atomic_write_json(os.path.join(args.out, "grid.json"), rows)
    common.atomic_write_bytes(os.path.join(args.out, "grid.md"), ("\n".join(lines) + "\n").encode())


# ====================================================================== command line
def items_arg(text):
    n = common.positive_int(text)
    if n < 2:
        raise argparse.ArgumentTypeError(f"--items needs at least 2 items, got {n}")
    return n


def value_range_arg(text):
    value_range = common.positive_int(text)
    if value_range < 2:
        raise argparse.ArgumentTypeError(f"--range needs at least 2, got {value_range}")
    return value_range


def check_args(parser, args, argv):
    """Errors for flags that contradict each other or do nothing in the chosen mode; the thesis'
    per-model settings where a flag was not given."""
    given = common.given_flags(parser, argv)
    modes = [m for m in ("--eval-only", "--tradeoff", "--labels-only", "--grid") if m in given]
    if len(modes) > 1:
        parser.error(f"{' and '.join(modes)} are different modes: choose one")
    if "--cluster" in given and "--grid" not in given:
        parser.error("--cluster runs the --grid trials: add --grid, or drop --cluster")
    if args.eval_only or args.tradeoff:
        ignored = given - {"--eval-only", "--tradeoff", "--data-dir", "--workers", "--decode"}
        ignored -= {"--threads", "--device", "--precision"}
        if ignored:
            parser.error(f"{modes[0]} ignores {', '.join(sorted(ignored))}")
    if args.select_mu not in args.mu:
        parser.error(f"--select-mu {args.select_mu:g} must be one of --mu {args.mu}")
    if args.pretrained and not os.path.isfile(args.pretrained):
        parser.error(f"--pretrained: no such file {args.pretrained}")
    if args.eval_only and not os.path.isfile(args.eval_only):
        parser.error(f"--eval-only: no such file {args.eval_only}")
    if args.supervision == "none" and args.model != "ldf":
        parser.error(
            "--supervision none trains on objective and constraint only: needs --model ldf"
        )
    if args.eval_items and args.arch != "set":
        parser.error("--eval-items needs --arch set (the fc network has a fixed number of items)")
    if args.pretrained and args.model == "fc":
        parser.error("--pretrained trains the LDF model from a checkpoint; drop --model fc")
    if args.pretrain_epochs and (args.model == "fc" or args.pretrained):
        parser.error("--pretrain-epochs trains FC, then LDF from it: drop --model fc, --pretrained")
    if args.pretrain_epochs and args.grid:
        parser.error("--grid searches one model's settings: drop --pretrain-epochs")
    if args.pretrain_epochs and (args.supervision == "none" or args.arch == "set"):
        parser.error("--pretrain-epochs pre-trains the thesis' FC network on labels")
    if args.model == "fc" and "--step" in given:
        parser.error("--step moves the LDF multiplier: the fc model has none")
    if args.dual != "scalar" and args.model != "ldf":
        parser.error(f"--dual {args.dual} moves LDF multipliers: needs --model ldf")
    if "--rho" in given and args.dual != "augmented":
        parser.error("--rho is the augmented Lagrangian's penalty: add --dual augmented")
    if "--dual-lr" in given and args.dual != "dual-net":
        parser.error("--dual-lr trains the dual network: add --dual dual-net")
    if args.distribution == "similar-weights" and "--range" in given:
        parser.error("--distribution similar-weights has fixed ranges: drop --range")
    min_range = MIN_RANGE.get(args.distribution, 0)
    if args.value_range < min_range:
        parser.error(
            f"--distribution {args.distribution} needs --range >= {min_range}, got "
            f"{args.value_range} (its offsets R/{CORRELATION_DIVISOR} or "
            f"R/{ALMOST_STRONG_DIVISOR} would be 0)"
        )
    if args.solver is None:
        args.solver = default_solver(args.distribution)
    if args.instances < 10:
        parser.error(f"--instances {args.instances}: at least 10 are needed for an 80/10/10 split")
    if args.device not in ("auto", "cpu") and not args.device.startswith("cuda"):
        parser.error(f"--device {args.device!r}: expected auto, cpu, cuda or cuda:N")
    kind = model_kind({**vars(args), "pretrained": args.pretrained or args.pretrain_epochs})
    settings = THESIS_SETTINGS[kind]
    if args.dual in ("per-instance", "augmented") and args.step is None:
        # one lambda_i per instance: the thesis' step times the training instances, so that the
        # mean lambda_i moves as the thesis' lambda does when every instance is violated alike
        args.step = settings["step"] * int(TRAIN_SHARE * args.instances)
    if args.dual == "augmented" and args.rho is None:
        args.rho = args.step
    for name in ("lr", "step", "max_grad_norm"):
        if getattr(args, name) is None:
            setattr(args, name, settings[name])
    grid_lr, grid_step, grid_max_grad_norm = THESIS_GRID[kind]
    if args.grid_lr is None:
        args.grid_lr = grid_lr
    if args.grid_step is None:
        args.grid_step = grid_step
    if args.grid_max_grad_norm is None:
        args.grid_max_grad_norm = grid_max_grad_norm
    if args.out is None:
        if args.pretrain_epochs:  # named (and set up) as the pre-trained LDF
            args.pretrained = PRETRAIN_PENDING
        args.out = os.path.join("runs", "knapsack", *class_folder(vars(args)), run_name(vars(args)))
    if args.pretrain_epochs:
        args.pretrained = os.path.join(args.out, PRETRAIN_FOLDER, "fc.pt")


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    g = p.add_argument_group("instances and labels")
    g.add_argument(
        "--items", type=items_arg, default=500, help="items per instance n (thesis: 500)"
    )
    g.add_argument(
        "--instances",
        type=common.positive_int,
        default=30000,
        help="instances S, split 80/10/10 into train/val/test (thesis: 30000)",
    )
    g.add_argument(
        "--distribution",
        choices=DISTRIBUTIONS,
        default="uncorrelated",
        help="Pisinger's instance class (Computers & OR 2005): uncorrelated (the thesis' data), "
        "weakly-, strongly-, inverse-strongly- and almost-strongly-correlated, subset-sum, "
        "similar-weights, spanner(2, 10) over uncorrelated, weakly or strongly correlated items",
    )
    g.add_argument(
        "--range",
        dest="value_range",
        type=value_range_arg,
        default=THESIS_VALUE_RANGE,
        help="data range R: weights (or values) are drawn from 1..R (thesis code: 2000)",
    )
    g.add_argument(
        "--solver",
        choices=SOLVERS,
        help="exact back end for the labels: combo (default: the C++ expanding-core dynamic "
        "program of csrc/knapsack.h after Pisinger's combo; core where it cannot be built), "
        "ortools (branch and bound), core (the same algorithm in numpy), gurobi (falls back to "
        "the default if its licence is small)",
    )
    g.add_argument(
        "--time-limit",
        type=common.positive_float,
        default=DEFAULT_TIME_LIMIT,
        help="seconds per instance the exact solver may take; an instance not proven optimal "
        "by then stops the run with an error",
    )
    g.add_argument(
        "--workers",
        type=common.positive_int,
        default=max(1, os.cpu_count() or 1),
        help="worker processes: label generation, and the --grid trials (a local Dask cluster)",
    )
    g.add_argument(
        "--cluster",
        help="--grid: address of a running Dask scheduler for the trials (default "
        "$LDF_DASK_SCHEDULER, else a local cluster of --workers processes)",
    )
    g.add_argument("--data-dir", default="data", help="where instances and labels are cached")
    g = p.add_argument_group("model and training (defaults: the thesis' selected models)")
    g.add_argument(
        "--model",
        choices=["fc", "ldf"],
        default="ldf",
        help="fc: BCE only; ldf: BCE + lambda * violation (default)",
    )
    g.add_argument(
        "--arch",
        choices=["fc", "set"],
        default="fc",
        help="fc: the thesis network (fixed n); set: permutation-equivariant item scorer (any n)",
    )
    g.add_argument(
        "--supervision",
        choices=["labels", "none"],
        default="labels",
        help="none: no labels in training; loss = -objective of the relaxed prediction + "
        "lambda * its LP violation (needs --model ldf)",
    )
    g.add_argument(
        "--pretrained",
        metavar="CKPT",
        help="start LDF from this checkpoint's weights (the thesis' pre-trained LDF)",
    )
    g.add_argument(
        "--pretrain-epochs",
        type=common.positive_int,
        metavar="N",
        help="the thesis' Table 4 in one command: first train FC for N epochs (its settings: lr "
        "1e-3, grad norm 10) into <out>/fc, then LDF from its selected checkpoint, as "
        "--pretrained <out>/fc/fc.pt would (resumes both)",
    )
    g.add_argument(
        "--epochs",
        type=common.positive_int,
        default=THESIS_EPOCHS,
        help=f"maximum epochs (thesis: {THESIS_EPOCHS})",
    )
    g.add_argument(
        "--patience",
        type=common.positive_int,
        default=THESIS_PATIENCE,
        help="stop once this many epochs in a row improved none of: validation AR, validation "
        f"loss, any mu-loss (thesis: {THESIS_PATIENCE})",
    )
    g.add_argument("--batch-size", type=common.positive_int, default=256, help="thesis: 256")
    g.add_argument(
        "--lr",
        type=common.positive_float,
        help="Adam learning rate (thesis: fc 1e-3, ldf 1e-4, pre-trained 1e-4)",
    )
    g.add_argument(
        "--step",
        type=common.nonnegative_float,
        help="Lagrangian step s of the per-epoch multiplier update, Algorithm 1 "
        "(thesis: ldf 1e-7, pre-trained 1e-4)",
    )
    g.add_argument(
        "--lambda0",
        type=common.nonnegative_float,
        default=1.0,
        help="initial multiplier (thesis: 1)",
    )
    g.add_argument(
        "--dual",
        choices=common.DUALS,
        default="scalar",
        help="the multipliers (beyond the thesis but scalar): scalar (the thesis' one lambda, "
        "Algorithm 1); per-instance (one lambda_i per training instance, lambda_i += step * its "
        "own violation once an epoch); augmented (the same lambda_i, raised by rho * nu_i, and "
        "rho/2 * nu_i^2 in the loss); dual-net (a network maps the instance's inputs to lambda, "
        "trained by ascent on the Lagrangian; primal-dual learning)",
    )
    g.add_argument(
        "--rho",
        type=common.positive_float,
        help="--dual augmented: penalty rho of the augmented Lagrangian, also the multiplier "
        "step (the method of multipliers); default: the per-instance step",
    )
    g.add_argument(
        "--dual-lr",
        type=common.positive_float,
        default=common.DUAL_NET_LR,
        help="--dual dual-net: Adam learning rate of the dual network",
    )
    g.add_argument(
        "--max-grad-norm",
        type=common.nonnegative_float,
        help="clip the gradient norm to this, 0: no clipping "
        "(thesis: fc 10, ldf 0.5, pre-trained 10)",
    )
    g.add_argument(
        "--violation",
        choices=["raw", "relative"],
        default="raw",
        help="raw: max(0, sum_i x_i w_i - W) in weight units (thesis code); relative: divided by W",
    )
    g.add_argument(
        "--k",
        type=common.positive_float,
        default=25.0,
        help="sharpness of the rounding surrogate (eq. 13; thesis: 25)",
    )
    g.add_argument(
        "--mu",
        type=common.nonnegative_float,
        nargs="+",
        default=[0.0, 0.2, 1.0, 10.0],
        help="mu values of the mu-loss (eq. 15: validation BCE summed over items "
        "+ mu * violation); one best checkpoint is kept per mu",
    )
    g.add_argument(
        "--select-mu",
        type=common.nonnegative_float,
        default=1.0,
        help="the mu whose best checkpoint LDF reports (thesis: the 1-loss); FC reports its best "
        "validation AR",
    )
    g.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16"],
        default="auto",
        help="bf16: bfloat16 autocast for the network (training and inference); auto: bf16 on "
        "CUDA and on CPUs with AMX or AVX-512 BF16, else fp32",
    )
    g.add_argument(
        "--fused-adam",
        action="store_true",
        help="Adam's fused kernel: one pass over the weights a step instead of one per "
        "operation, a faster epoch (bench/knapsack_train.py), but results differ from the "
        "default Adam's in the last bits, so it is off by default",
    )
    g.add_argument(
        "--grid", action="store_true", help="run the Table 1 grid (lr x step x grad norm)"
    )
    g.add_argument(
        "--grid-lr",
        type=common.positive_float,
        nargs="+",
        help="learning rates of the grid (default: the thesis' Table 1 for the model)",
    )
    g.add_argument(
        "--grid-step",
        type=common.nonnegative_float,
        nargs="+",
        help="Lagrangian steps of the grid (default: Table 1)",
    )
    g.add_argument(
        "--grid-max-grad-norm",
        type=common.nonnegative_float,
        nargs="+",
        help="gradient-norm limits of the grid (default: Table 1)",
    )
    g = p.add_argument_group("evaluation")
    g.add_argument(
        "--decode",
        choices=["raw", "repair", "swap"],
        default="raw",
        help="which decode results.json calls 'test' (the tables show all three, and greedy); "
        "repair takes the model's items by falling probability while they fit, then fills "
        "greedily; swap then exchanges single items while that gains value",
    )
    g.add_argument(
        "--eval-items",
        type=items_arg,
        nargs="+",
        default=[],
        help="set arch: also evaluate on fresh instances with these n, without retraining",
    )
    g.add_argument(
        "--eval-instances",
        type=common.positive_int,
        default=3000,
        help="instances per --eval-items n",
    )
    g.add_argument(
        "--tradeoff",
        metavar="DIR",
        help="plot AR against %% violated for every results.json under DIR, then stop",
    )
    g = p.add_argument_group("running")
    g.add_argument(
        "--seed",
        type=common.nonnegative_int,
        default=0,
        help="seeds instances, split, initialisation and batches",
    )
    g.add_argument("--out", help="output folder (default runs/knapsack/<model>)")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    g.add_argument(
        "--threads",
        type=common.positive_int,
        help="torch threads (default: the cores this process may use)",
    )
    g.add_argument("--fresh", action="store_true", help="start over instead of resuming last.pt")
    g.add_argument(
        "--eval-only",
        metavar="CKPT",
        help="evaluate a saved checkpoint on its test split and stop",
    )
    g.add_argument(
        "--labels-only", action="store_true", help="make instances and labels, then stop"
    )
    args = p.parse_args(argv)
    check_args(p, args, argv)
    return args


def main(argv=None):
    args = parse_args(argv)
    common.set_threads(args.threads)
    if args.tradeoff:
        return tradeoff(args.tradeoff)
    if args.eval_only:
        config = common.load_checkpoint(args.eval_only)["config"]
        settings = {**config, "data_dir": args.data_dir, "workers": args.workers}
        data = load_data(argparse.Namespace(**settings))
        out = os.path.dirname(os.path.abspath(args.eval_only))
        stem = "results_" + os.path.splitext(os.path.basename(args.eval_only))[0]
        report(args.eval_only, data, out, decode=args.decode, precision=args.precision, stem=stem)
        print(f"\nwrote {os.path.join(out, stem)}.json and .md")
        return
    data = load_data(args)
    print(
        f"{args.instances} instances of {args.distribution}, n={args.items}, R={args.value_range}: "
        f"labels by {data['solver']}, {1000 * np.nanmean(data['solve_seconds']):.3f} ms per "
        f"instance (one core), {data['label_wall_seconds']:.1f} s wall with {args.workers} "
        "workers (0 when cached)"
    )
    if args.labels_only:
        row = greedy_row(data)
        print(
            f"greedy v/w on all {row['n']} instances: AR {row['ar']:.5f}, "
            f"{row['pct_violated']:.1f} % violated, {row['ms_per_instance']:.4f} ms per instance"
        )
        return
    if args.grid:
        grid(args, data)
    else:
        run(args, data)


if __name__ == "__main__":
    main()
