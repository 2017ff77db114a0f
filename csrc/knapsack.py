"""The exact 0/1 knapsack solver of csrc/knapsack.h (combo's algorithm: Pisinger 1997; Martello,
Pisinger and Toth 1999) from Python, through the op ldf_ip::knapsack_exact (csrc/knapsack.cpp),
which csrc/ops.py loads or JIT-builds on first use with the one-hot op's library.

    solve(w, v, capacity, time_limit)        -> x (uint8) of one instance, or TimeLimit/ValueError
    solve_batch(w, v, capacity, time_limit)  -> x (B, n), status (B,), seconds (B,): in parallel
                                                across the instances on torch's intra-op threads

Weights and values are integers (any numeric dtype holding integers), weights >= 0; the capacity
is rounded down. Items of value <= 0 are never taken. The sums of the weights and of the values
that matter must stay below 2^62 (exact 64-bit arithmetic, 128-bit products). available() says
whether the op runs here; knapsack_ldf.solve_combo falls back to its numpy solve_core when not.
"""

import math

import numpy as np
import torch

from csrc import ops

__all__ = ["TimeLimit", "available", "solve", "solve_batch"]

# knapsack::Status of csrc/knapsack.h
OPTIMAL, TIME_LIMIT, STATE_LIMIT, TOO_LARGE, BAD_INPUT, INTERNAL_ERROR = range(6)
MAX_STATES = 1 << 22  # knapsack::kMaxStates
MAX_EXACT = 2**62  # weights, values and their sums must stay below
NAME = "the exact knapsack solver (combo)"


class TimeLimit(RuntimeError):
    """Not proven optimal within the time limit (or within the solver's state limit)."""


def available():
    """Whether ldf_ip::knapsack_exact can run here (loads or builds it on the first call)."""
    return ops.knapsack_op_loaded()


def _integers(array, name):
    array = np.asarray(array)
    if array.dtype.kind in "iub":
        return np.ascontiguousarray(array, dtype=np.int64)
    array = np.asarray(array, dtype=np.float64)
    # two passes where isfinite, round and a range test took five (this runs on every label): the
    # largest magnitude is NaN or infinite if any entry is, and below 2^62 the cast to int64 is
    # exact exactly for the integers
    largest = np.abs(array).max(initial=0.0)
    if not np.isfinite(largest):
        raise ValueError(f"{NAME} needs integer weights and values ({name} are not)")
    if largest >= MAX_EXACT:
        raise ValueError(f"{NAME}: weights and values too large for exact int64 bounds")
    integers = array.astype(np.int64)
    if not (integers == array).all():
        raise ValueError(f"{NAME} needs integer weights and values ({name} are not)")
    return np.ascontiguousarray(integers)


def _capacity(capacity):
    """One capacity as _capacities does it, in plain Python (a sixteenth of its time: this runs on
    every label)."""
    capacity = float(capacity)
    if math.isnan(capacity):
        raise ValueError(f"{NAME}: a capacity is NaN")
    if math.isinf(capacity):
        return -1 if capacity < 0 else MAX_EXACT
    return min(max(math.floor(capacity), -1), MAX_EXACT)


def _capacities(capacity):
    capacity = np.floor(np.asarray(capacity, dtype=np.float64))
    if np.any(np.isnan(capacity)):
        raise ValueError(f"{NAME}: a capacity is NaN")
    # below 0 nothing fits; above 2^62 everything that fits at all does (the sums are smaller)
    return np.clip(capacity, -1, MAX_EXACT).astype(np.int64)


def solve_batch(w, v, capacity, time_limit=None):
    """Exact solutions of a batch: w, v (B, n), capacity (B,) -> x uint8 (B, n), status int64 (B,)
    (OPTIMAL, TIME_LIMIT, ...; x is 0 where not OPTIMAL), seconds float64 (B,) per instance. The
    instances run in parallel on torch's intra-op threads (torch.set_num_threads); time_limit:
    seconds per instance, None for none."""
    w, v = _items(w, v)
    return _solve_batch(w, v, _capacities(capacity).reshape(-1), time_limit)


def _items(w, v):
    w, v = _integers(w, "weights"), _integers(v, "values")
    if w.ndim != 2 or v.shape != w.shape:
        raise ValueError(f"{NAME}: w and v must be (instances, items), got {w.shape}, {v.shape}")
    return w, v


def _solve_batch(w, v, capacity, time_limit):
    """solve_batch on checked int64 arrays (capacity: (B,), already rounded and clipped)."""
    limit = 0.0 if time_limit is None or math.isinf(time_limit) else float(time_limit)
    x, status, seconds = torch.ops.ldf_ip.knapsack_exact.default(
        torch.from_numpy(w), torch.from_numpy(v), torch.from_numpy(capacity), limit
    )
    return x.numpy(), status.numpy(), seconds.numpy()


def check(status, time_limit=None):
    """Raise what a status other than OPTIMAL means."""
    if status == OPTIMAL:
        return
    if status == TIME_LIMIT:
        raise TimeLimit(f"{NAME} did not prove optimality within {time_limit:g} s")
    if status == STATE_LIMIT:
        raise TimeLimit(f"{NAME} holds more than {MAX_STATES} states")
    if status == TOO_LARGE:
        raise ValueError(f"{NAME}: weights and values too large for exact int64 bounds")
    if status == BAD_INPUT:
        raise ValueError(f"{NAME} needs weights >= 0")
    raise RuntimeError(f"{NAME}: internal error (status {status}); please report the instance")


def solve(w, v, capacity, time_limit=None):
    """Optimal 0/1 solution (uint8, n) of one instance; TimeLimit when not proven optimal within
    time_limit seconds; ValueError for data it cannot solve exactly."""
    w, v = _items(np.asarray(w)[None], np.asarray(v)[None])
    capacity = np.array([_capacity(capacity)], dtype=np.int64)
    x, status, _seconds = _solve_batch(w, v, capacity, time_limit)
    check(int(status[0]), time_limit)
    return x[0]
