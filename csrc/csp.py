"""The CSP local improvement of csrc/csp_improve.h (csp_ldf.improve, move for move) from Python,
through the op ldf_ip::csp_improve (csrc/csp_improve.cpp), which csrc/ops.py loads or JIT-builds on
first use with the other ops' library.

    pack(space)                     -> the schedule space as the op reads it (once per instance)
    improve(packed, settings, chosen, costs, seconds, longest)
                                    -> improved columns (B, n), passes (B,), longest moves (4,)

available() says whether the op runs here; csp_ldf.improve falls back to its Python when not.
"""

import math

import numpy as np
import torch

from csrc import ops

__all__ = ["MOVES", "available", "improve", "pack"]

# csp::Improver::Move of csrc/csp_improve.h: the moves' kinds, in the order improve() tries them
MOVES = ("move_one", "place_once_off", "shift_chain", "eject")
# the tensors of a packed space, in the op's SpaceField order
SPACE_FIELDS = (
    "sizes",
    "col_class",
    "col_day",
    "col_dur",
    "col_runs",
    "class_ptr",
    "class_cols",
    "prec_ptr",
    "prec",
    "succ_ptr",
    "succ",
    "size",
    "lo",
    "hi",
    "order",
    "rank",
    "need",
    "room_cap",
)


def available():
    """Whether ldf_ip::csp_improve can run here (loads or builds it on the first call)."""
    return ops.csp_op_loaded()


def _longs(values):
    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.int64))


def _csr(lists):
    """Lists of integers -> (pointers, concatenated), as int64 tensors."""
    pointers = np.zeros(len(lists) + 1, np.int64)
    pointers[1:] = np.cumsum([len(entries) for entries in lists])
    flat = np.concatenate([np.asarray(entries, np.int64) for entries in lists])
    return _longs(pointers), _longs(flat)


def pack(space):
    """csp_ldf.schedule_space's dict -> the op's tensors (a list in SPACE_FIELDS order). The runs
    of each column come from its first slots (padding: T); the op derives a column's slots from
    them, which csp_ldf checks once against the cover matrix (tests/test_csp_improve_op.py)."""
    T = space["T"]
    runs = np.nan_to_num(space["run_float"], nan=T).astype(np.int64)
    class_ptr, class_cols = _csr(space["by_class"])
    prec_ptr, prec = _csr(space["prec"])
    succ_ptr, succ = _csr(space["succ"])
    fields = dict(
        sizes=_longs([space["n"], space["n_rec"], T, space["inst"]["days"]]),
        col_class=_longs(space["cls"]),
        col_day=_longs(space["day"]),
        col_dur=_longs(space["dur"]),
        col_runs=_longs(runs),
        class_ptr=class_ptr,
        class_cols=class_cols,
        prec_ptr=prec_ptr,
        prec=prec,
        succ_ptr=succ_ptr,
        succ=succ,
        size=_longs(space["size"]),
        lo=_longs(space["lo"]),
        hi=_longs(space["hi"]),
        order=_longs(space["order"]),
        rank=_longs(space["rank"]),
        need=torch.from_numpy(np.ascontiguousarray(space["need"], dtype=np.float64)),
        room_cap=torch.from_numpy(np.ascontiguousarray(space["room_cap"], dtype=np.float64)),
    )
    return [fields[name] for name in SPACE_FIELDS]


def improve(packed, settings, chosen, costs, seconds=None, longest=None):
    """The op on a batch: chosen int (B, n) feasible schedules (-1: a once-off class left out),
    costs float (B, columns); settings: the constants of csp_ldf, in the op's order; seconds: each
    scenario's budget (None: to a local optimum); longest: {move: seconds} so far, updated here.
    -> (improved columns (B, n) int64, passes (B,) int64). Scenarios run in parallel on torch's
    intra-op threads."""
    if not available():
        raise RuntimeError(f"{ops.CSP_OP} cannot run here: {ops.CSP_FALLBACK}")
    longest = {} if longest is None else longest
    before = torch.tensor([longest.get(move, 0.0) for move in MOVES], dtype=torch.float64)
    improved, passes, after = torch.ops.ldf_ip.csp_improve.default(
        packed,
        torch.tensor(settings, dtype=torch.float64),
        torch.from_numpy(np.ascontiguousarray(np.atleast_2d(chosen), dtype=np.int64)),
        torch.from_numpy(np.ascontiguousarray(np.atleast_2d(costs), dtype=np.float64)),
        math.inf if seconds is None else float(seconds),
        before,
    )
    longest.update(zip(MOVES, after.tolist(), strict=True))
    return improved.numpy(), passes.numpy()
