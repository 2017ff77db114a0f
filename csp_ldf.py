#!/usr/bin/env python3
"""Class scheduling (CSP) with the Lagrangian dual framework, thesis chapter 4 (Keegan 2023), in one file:
instances (4.1) -> price scenarios (4.2) -> MIP labels (4.1) -> model -> loss -> train -> evaluate (4.3-4.4).

2880 slots of 15 min, November 2020 AEDT: slot t is day t // 96 (day 0 = Sunday 1 Nov), time t % 96 (9:00 = 36).
Decision form (labels and networks): recurring_start[a] = option 32*weekday + offset (weekday 0..4 of the first
week with a Monday, offset = slots after 9:00, ends by 17:00, repeats weekly); oneoff_start[a] = slot 0..2879 or
2880 = unscheduled; battery_state[b, t] = 0 charge / 1 idle / 2 discharge. Cost: sum_t 0.25/1000 price_t grid_t
- one-off values; grid >= 0; a battery starts full and moves 0.25 m_b kWh a slot (the thesis dropped the 0.25).
"""
import argparse
import contextlib
import copy
import datetime
import io
import json
import math
import multiprocessing
import os
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn as nn
import torch.nn.functional as F

import common
from common import (atomic_write_bytes, atomic_write_json, nonnegative_float, nonnegative_int, positive_float,
                    positive_int, set_seed)

DAY, NINE, FIVE = 96, 36, 68                   # slots per day; 9:00 and 17:00 as slots of the day
WEEK_OPTIONS = 32                              # recurring offsets 9:00..16:45 -> option = 32*weekday + offset
NOVEMBER = dict(days=30, first_weekday=datetime.date(2020, 11, 1).weekday())  # Sunday
CHARGE, IDLE, DISCHARGE = 0, 1, 2
THESIS_SMALL0 = 16530.94                       # thesis_mip_results/small_0/Info.txt, Gurobi, 1% gap


# ================================================================ 4.1 instances and time series
def find_data_dir(arg=None):
    """--data-dir, then $CSP_DATA_DIR, then data/ieee_cis/, then ../shared/data/ieee_cis/ (repo-relative)."""
    here = Path(__file__).resolve().parent
    for d in [arg, os.environ.get("CSP_DATA_DIR"), here / "data/ieee_cis", here.parent / "shared/data/ieee_cis"]:
        if d and (Path(d) / "instances").is_dir():
            return Path(d)
    raise SystemExit("CSP data not found (--data-dir, $CSP_DATA_DIR, data/ieee_cis/, ../shared/data/ieee_cis/): "
                     "get the IEEE-CIS 3rd Technical Challenge data; ../shared/data/ieee_cis/README.md has the layout")


LINE_FORMAT = {  # tag: (field types, what the line must look like); '*' = that many predecessor ids follow
    "ppoi": ("iiiii", "ppoi <#buildings> <#solar> <#batteries> <#recurring> <#once-off>"),
    "b": ("iii", "b <building id> <#small rooms> <#large rooms>"),
    "s": ("ii", "s <solar id> <building id>"),
    "c": ("iifff", "c <battery id> <building id> <capacity kWh> <max power kW> <efficiency in (0,1]>"),
    "r": ("iiSfii*", "r <id> <#rooms> <S|L> <load kW> <duration 1..32> <#predecessors> <predecessor ids>"),
    "a": ("iiSfiffi*", "a <id> <#rooms> <S|L> <load kW> <duration 1..96> <value> <penalty> <#predecessors> <ids>"),
}


def read_instance(path):
    """Parse a `ppoi` file (classes: recurring, then once-off); errors name file, line and expected form."""
    path = Path(path)
    header, rooms, batteries, cls = None, np.zeros(2, int), [], []
    for no, line in enumerate(path.read_text().splitlines(), 1):
        f = line.split()
        if not f:
            continue
        types, form = LINE_FORMAT.get(f[0], (None, "a line starting with ppoi, b, s, c, r or a"))
        try:
            assert types is not None and (header is not None) == (f[0] != "ppoi")
            n_fixed = len(types.rstrip("*"))
            vals = [int(x) if t == "i" else float(x) if t == "f" else "SL".index(x)
                    for t, x in zip(types[:n_fixed], f[1:])]
            extra = [int(x) for x in f[1 + n_fixed:]]
            assert len(vals) == n_fixed and len(extra) == (vals[-1] if types.endswith("*") else 0)
            if f[0] == "ppoi":
                header = vals
            elif f[0] == "b":
                rooms += vals[1:]
            elif f[0] == "c":
                assert vals[2] > 0 and vals[3] > 0 and 0 < vals[4] <= 1
                batteries.append(vals[2:])
            elif f[0] in "ra":
                rec = f[0] == "r"
                assert vals[0] == (len(cls) if rec else len(cls) - header[3]) and vals[1] > 0
                assert 1 <= vals[4] <= (WEEK_OPTIONS if rec else DAY)
                assert all(0 <= p < (header[3] if rec else header[4]) and p != vals[0] for p in extra)
                cls.append(dict(oneoff=not rec, rooms=vals[1], large=vals[2], load=vals[3], dur=vals[4],
                                value=0.0 if rec else vals[5], penalty=0.0 if rec else vals[6],
                                prec=[p + (0 if rec else header[3]) for p in extra]))
        except (AssertionError, ValueError, IndexError):
            raise ValueError(f"{path}:{no}: expected '{form}', got {line.strip()!r}") from None
    if header is None or len(batteries) != header[2] or len(cls) != header[3] + header[4]:
        raise ValueError(f"{path}: header 'ppoi ...' missing or not matching {len(batteries)} c, {len(cls)} r/a lines")
    arrays = {k: np.array([c[k] for c in cls]) for k in ("oneoff", "rooms", "large", "load", "dur", "value", "penalty")}
    cap, m, eff = (np.array(x, float).reshape(-1) for x in zip(*batteries)) if batteries else [np.zeros(0)] * 3
    return dict(arrays, name=path.stem, n_rec=header[3], n_oneoff=header[4], prec=[c["prec"] for c in cls],
                n_small=int(rooms[0]), n_large=int(rooms[1]), cap=cap, m=m, eff=eff, **NOVEMBER)


def read_price(data_dir):
    """VIC1 RRP ($/MWh) of November 2020; each 30-min row (stamped at its end) covers two slots."""
    f = data_dir / "price/PRICE_AND_DEMAND_202011_VIC1.csv"
    rows = [r.split(",") for r in f.read_text().splitlines()[1:] if r.strip()]
    if len(rows) != 1440 or rows[0][1] != "2020/11/01 00:30:00" or rows[-1][1] != "2020/12/01 00:00:00":
        raise ValueError(f"{f}: expected 1440 half-hour rows from 2020/11/01 00:30:00 to 2020/12/01 00:00:00")
    return np.repeat(np.array([float(r[3]) for r in rows]), 2)


def read_loads(data_dir, which="forecast"):
    """(base load, solar) kW per slot: sums of the Building*/Solar* series. forecast: the thesis' Forecasts-sample.csv
    (UTC) shifted 11 h to AEDT as the thesis does (drop the last 44 values, prepend values 52..95); actual: the real
    November values of nov_data.tsf from 2020-10-31 13:00 UTC, a missing '?' filled by its time-of-day mean."""
    series = {}
    if which == "forecast":
        for row in (data_dir / "thesis_inputs/Forecasts-sample.csv").read_text().splitlines():
            name, *vals = row.split(",")
            series[name] = np.concatenate([np.array(vals[52:96], float), np.array(vals[:-44], float)])
    for row in (data_dir / "energy_tsf/nov_data.tsf").read_text().splitlines() if which == "actual" else []:
        if row.strip() and row[0] not in "#@":
            name, stamp, vals = row.split(":", 2)
            i = int((datetime.datetime(2020, 10, 31, 13) - datetime.datetime.strptime(stamp, "%Y-%m-%d %H-%M-%S"))
                    .total_seconds()) // 900
            v = np.array([np.nan if x == "?" else float(x) for x in vals.split(",")[i:i + 2880]]).reshape(30, DAY)
            fill = np.nanmean(np.where(np.isnan(v).all(0), np.nanmean(v), v), 0)    # series mean for a slot never seen
            series[name] = np.where(np.isnan(v), fill, v).reshape(-1)
    return tuple(sum(v for k, v in series.items() if k.startswith(p)) for p in ("Building", "Solar"))


# ================================================================ 4.2 price scenarios
def stl_parts(price):
    from statsmodels.tsa.seasonal import STL         # trend, seasonal (period one day), residual
    fit = STL(price, period=DAY).fit()
    return np.asarray(fit.trend), np.asarray(fit.seasonal), np.asarray(fit.resid)


def price_scenario(parts, block, seed, index):
    """Thesis 4.2: trend + seasonal + residual blocks bootstrapped at the same time of day -> (prices, block starts)."""
    trend, seasonal, resid = parts
    rng, T, out, starts = np.random.default_rng([seed, index]), len(resid), np.empty(len(resid)), []
    for p in range(0, T, block):
        n, choices = min(block, T - p), np.arange(p % DAY, T - min(block, T - p) + 1, DAY)
        starts.append(int(rng.choice(choices)) if len(choices) else int(rng.integers(0, T - n + 1)))
        out[p:p + n] = resid[starts[-1]:starts[-1] + n]
    return trend + seasonal + out, np.array(starts)


# ================================================================ 4.1 the MIP
def weekdays(inst):
    wd = (inst["first_weekday"] + np.arange(inst["days"])) % 7
    return wd, int(np.argmax(wd == 0))     # weekday of each day, first Monday


def day_windows(inst):
    """Earliest and latest day (weekday 0..4 or day of month) of each class from the precedence graph."""
    n, n_rec = len(inst["dur"]), inst["n_rec"]
    lo, hi = np.zeros(n, int), np.where(np.arange(n) < n_rec, 4, inst["days"] - 1)
    for _ in range(n + 1):
        old = (lo.copy(), hi.copy())
        for a, ps in enumerate(inst["prec"]):
            for p in ps:
                lo[a] = max(lo[a], lo[p] + 1)
                if a < n_rec:              # recurring classes must run, so their predecessors must be earlier
                    hi[p] = min(hi[p], hi[a] - 1)
        if all((o == x).all() for o, x in zip(old, (lo, hi))):
            return lo, hi
    raise ValueError(f"{inst['name']}: the precedences contain a cycle")


def start_columns(inst):
    """One binary column per (class, allowed start): class, start, day, value, and `cover` (slot x column)."""
    (wd, monday), (lo, hi) = weekdays(inst), day_windows(inst)
    blocks, slots = [], []                                # blocks of columns: (start, day, value, class)
    for a, dur in enumerate(inst["dur"]):
        if a < inst["n_rec"]:
            offs = np.arange(WEEK_OPTIONS - dur + 1)
            for d in range(lo[a], hi[a] + 1):
                occ = np.arange(monday + d, inst["days"], 7)
                if len(occ):
                    blocks.append((WEEK_OPTIONS * d + offs, d, 0.0, a))
                    slots += [(occ[:, None] * DAY + NINE + o + np.arange(dur)).ravel() for o in offs]
        else:
            d, s = np.divmod(np.arange(lo[a] * DAY, inst["days"] * DAY), DAY)
            d, s = d[s + dur <= DAY], s[s + dur <= DAY]
            business = (wd[d] < 5) & (s >= NINE) & (s + dur <= FIVE)
            blocks.append((d * DAY + s, d, inst["value"][a] - inst["penalty"][a] * ~business, a))
            slots += list(blocks[-1][0][:, None] + np.arange(dur))
    start, day, value, cls = (np.concatenate([np.broadcast_to(b[k], b[0].shape) for b in blocks]) for k in range(4))
    if not all(np.isin(np.arange(inst["n_rec"]), cls)):
        raise ValueError(f"{inst['name']}: a recurring class has no feasible start")
    lens = np.array([len(s) for s in slots])
    cover = sp.csc_matrix((np.ones(lens.sum()), np.concatenate(slots), np.r_[0, np.cumsum(lens)]),
                          shape=(inst["days"] * DAY, len(slots)))
    return dict(cls=cls, start=start, day=day, value=value.astype(float), cover=cover)


def build_mip(inst, base, solar, battery="auto"):
    """The thesis' class MIP as sparse arrays, all but the objective; precedence by running sums E[p, d] = [p
    scheduled before day d]. The batteries separate (battery_dispatch, exact) when grid >= 0 cannot bind, i.e.
    base - solar covers every battery discharging at once: true by >= 142 kW for all 20 instances."""
    cols, T = start_columns(inst), len(base)
    n_x = len(cols["cls"])
    if battery not in ("auto", "dp") or (base - solar - np.sum(inst["m"] * np.sqrt(inst["eff"])) < 0).any():
        raise ValueError("grid >= 0 can bind here: the batteries do not separate (batteries in the MIP: git history)")
    preds = sorted({p for ps in inst["prec"] for p in ps})      # running sums E[p, d] for d >= 1, then their columns
    e_keys = [(p, d) for p in preds for d in range(1, 5 if p < inst["n_rec"] else inst["days"])]
    e_index, n = {k: n_x + i for i, k in enumerate(e_keys)}, n_x + len(e_keys)
    R, C, V, lo, hi = [], [], [], [], []                  # triplets and row bounds

    def row(c, v, lower, upper):
        for lst, x in zip((R, C, V, lo, hi), (np.full(len(c), len(lo)), c, np.asarray(v, float), lower, upper)):
            lst.append(x)

    by_class = [np.flatnonzero(cols["cls"] == a) for a in range(len(inst["dur"]))]
    for a, k in enumerate(by_class):                      # each recurring class once, each once-off at most once
        row(k, np.ones(len(k)), 1.0 if a < inst["n_rec"] else -np.inf, 1.0)
    room_use = cols["cover"].multiply(inst["rooms"][cols["cls"]]).tocsr()
    for size, cap in ((0, inst["n_small"]), (1, inst["n_large"])):
        use = (room_use @ sp.diags((inst["large"][cols["cls"]] == size).astype(float))).tocsr()
        for t in range(T):                                # room limits, where they can bind
            a, b = use.indptr[t], use.indptr[t + 1]
            if use.data[a:b].sum() > cap:
                row(use.indices[a:b], use.data[a:b], -np.inf, cap)
    for p, d in e_keys:                                   # E[p,d] - E[p,d-1] - sum_{k of p on day d-1} x_k = 0
        k = by_class[p][cols["day"][by_class[p]] == d - 1]
        prev = [e_index[p, d - 1]] if d > 1 else []
        row([e_index[p, d], *prev, *k], [1.0, *[-1.0] * len(prev), *[-1.0] * len(k)], 0.0, 0.0)
    for a, ps in enumerate(inst["prec"]):                 # sum_{k of a on day d} x_k <= E[p, d]
        for d in np.unique(cols["day"][by_class[a]]):
            k = by_class[a][cols["day"][by_class[a]] == d]
            for p in ps:
                row([*k, e_index[p, d]], [*np.ones(len(k)), -1.0], -np.inf, 0.0)
    A = sp.csc_matrix((np.concatenate(V), (np.concatenate(R), np.concatenate(C))), shape=(len(lo), n))
    e_key = np.array(list(e_index), int).reshape(-1, 2)
    return dict(inst=inst, cols=cols, base=base, solar=solar, battery="dp", n_x=n_x, A=A, e_cls=e_key[:, 0],
                e_day=e_key[:, 1], e_col=np.array(list(e_index.values()), int), row_lo=np.array(lo),
                row_hi=np.array(hi), col_lo=np.zeros(n), col_hi=np.ones(n), integer=np.arange(n) < n_x,
                load=cols["cover"].multiply(inst["load"][cols["cls"]] * inst["rooms"][cols["cls"]]).tocsc())


def battery_dispatch(c, cap, m, eff):
    """Exact cheapest states of one independent battery (cost c_t per kW): DP over charge levels cap - k 0.25 m."""
    K, T = int(math.floor(cap / (0.25 * m) + 1e-9)), len(c)
    V, choice, order = np.zeros(K + 1), np.empty((T, K + 1), np.int8), np.array([IDLE, CHARGE, DISCHARGE])
    for t in range(T - 1, -1, -1):                        # k = slots of 0.25 m below full
        opts = np.stack([V, np.full(K + 1, np.inf), np.full(K + 1, np.inf)])
        opts[1, 1:] = c[t] * m / math.sqrt(eff) + V[:-1]  # charge: k -> k-1
        opts[2, :-1] = -c[t] * m * math.sqrt(eff) + V[1:]  # discharge: k -> k+1
        best = opts.argmin(0)
        choice[t], V = order[best], opts[best, np.arange(K + 1)]
    states, k = np.empty(T, np.int8), 0
    for t in range(T):                                    # charge -> k-1, idle -> k, discharge -> k+1
        states[t] = choice[t, k]
        k -= 1 - states[t]
    return float(V[0]), states


def objective(mip, price):
    """Column costs and constant of the objective for one price series."""
    c, inst, cost = 0.25 / 1000 * price, mip["inst"], np.zeros(mip["A"].shape[1])
    cost[:mip["n_x"]] = mip["load"].T @ c - mip["cols"]["value"]
    runs = [battery_dispatch(c, *(inst[k][b] for k in ("cap", "m", "eff"))) for b in range(len(inst["cap"]))]
    offset = float(c @ (mip["base"] - mip["solar"])) + sum(r[0] for r in runs)
    return cost, offset, np.array([r[1] for r in runs], np.int8).reshape(len(runs), len(c))


def decision_form(mip, x, states):
    """Solver column values -> (recurring_start, oneoff_start, battery_state)."""
    inst, cols, on = mip["inst"], mip["cols"], np.flatnonzero(x[:mip["n_x"]] > 0.5)
    starts = np.full(len(inst["dur"]), len(mip["base"]))
    starts[cols["cls"][on]] = cols["start"][on]
    return starts[:inst["n_rec"]], starts[inst["n_rec"]:], states


def start_vector(mip, label):
    """A stored schedule as a column vector: constraints ignore price, so any label is a feasible warm start."""
    cols, x = mip["cols"], np.zeros(mip["A"].shape[1])
    want = np.r_[label["recurring_start"], label["oneoff_start"]]
    x[:mip["n_x"]] = want[cols["cls"]] == cols["start"]
    day = np.where(np.arange(len(want)) < mip["inst"]["n_rec"], want // WEEK_OPTIONS, want // DAY)
    done = want < len(mip["base"])                        # E[p, d] = [p scheduled before day d]
    x[mip["e_col"]] = done[mip["e_cls"]] & (day[mip["e_cls"]] < mip["e_day"])
    return x


def highs_model(mip, integer, threads):
    import highspy
    h, lp, A = highspy.Highs(), highspy.HighsLp(), mip["A"]
    h.setOptionValue("output_flag", False), h.setOptionValue("threads", threads)
    lp.num_col_, lp.num_row_, lp.col_cost_, lp.col_lower_ = A.shape[1], A.shape[0], np.zeros(A.shape[1]), mip["col_lo"]
    lp.col_upper_, lp.row_lower_, lp.row_upper_ = mip["col_hi"], mip["row_lo"], mip["row_hi"]
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_, lp.a_matrix_.index_, lp.a_matrix_.value_ = A.indptr, A.indices, A.data
    if integer:
        lp.integrality_ = [highspy.HighsVarType(int(i)) for i in mip["integer"]]   # 1 = kInteger, 0 = kContinuous
    h.passModel(lp)
    return h


def solve_highs(mip, price, gap=0.01, time_limit=600.0, threads=1, start=None, seed=0):
    """HiGHS: (1) the LP relaxation bounds; (2) the MIP on the columns that can pay (recurring, profitable
    one-off starts, LP and warm-start support) schedules; (3) only if not within `gap`, the full MIP goes on."""
    import highspy
    t0, n = time.perf_counter(), mip["A"].shape[1]
    cost, offset, states = objective(mip, price)
    if "highs" not in mip:
        mip["highs"], mip["highs_lp"] = highs_model(mip, True, threads), highs_model(mip, False, threads)
    h, relax, idx = mip["highs"], mip["highs_lp"], np.arange(n, dtype=np.int32)
    for m in (h, relax):
        m.changeColsCost(n, idx, cost), m.changeObjectiveOffset(offset)
    relax.run()
    bound, x_lp = relax.getInfo().objective_function_value, np.array(relax.getSolution().col_value)
    x0 = None if start is None else start_vector(mip, start)
    pays = (mip["cols"]["cls"] < mip["inst"]["n_rec"]) | (cost[:mip["n_x"]] < 0) | (x_lp[:mip["n_x"]] > 1e-6)
    pays, best = pays if x0 is None else pays | (x0[:mip["n_x"]] > 0.5), None
    for keep in (pays, np.ones(mip["n_x"], bool)):
        h.changeColsBounds(n, idx, mip["col_lo"], np.r_[keep, mip["col_hi"][mip["n_x"]:]].astype(float))
        left = time_limit - (time.perf_counter() - t0)
        for k, v in dict(mip_rel_gap=gap, time_limit=max(left, 0.01), random_seed=seed).items():
            h.setOptionValue(k, v)
        if x0 is not None:
            sol = highspy.HighsSolution()
            sol.col_value, sol.value_valid = list(x0), True
            h.setSolution(sol)
        h.run()
        info = h.getInfo()
        if info.primal_solution_status == 2 and (best is None or info.objective_function_value < best[0]):
            best = info.objective_function_value, np.array(h.getSolution().col_value)
            x0 = best[1]
        if keep is not pays:                              # the full MIP's bound is valid too
            bound = max(bound, info.mip_dual_bound)
        if best is not None and (best[0] - bound) <= gap * abs(best[0]) or left <= 0:
            break
    if best is None:
        raise RuntimeError(f"HiGHS found no schedule ({h.modelStatusToString(h.getModelStatus())})")
    proven = max(0.0, best[0] - bound) / max(abs(best[0]), 1e-9)
    return dict(solver="highs", status="optimal" if proven <= gap else "time limit", objective=best[0],
                bound=bound, gap=proven, seconds=time.perf_counter() - t0,
                **dict(zip(LABEL_KEYS, decision_form(mip, best[1], states))))


def solve_gurobi(mip, price, gap=0.01, time_limit=600.0, threads=1, seed=0, **_):
    """gurobipy on the same matrices, no warm start; None when its licence refuses the size (then HiGHS)."""
    import gurobipy as gp
    (cost, offset, states), lo, hi = objective(mip, price), mip["row_lo"], mip["row_hi"]
    with gp.Env(params=dict(OutputFlag=0, MIPGap=gap, TimeLimit=time_limit, Threads=threads, Seed=seed)) as env:
        g = gp.Model(env=env)
        x = g.addMVar(len(cost), lb=mip["col_lo"], ub=mip["col_hi"], obj=cost, vtype=np.where(mip["integer"], "B", "C"))
        g.addMConstr(mip["A"].tocsr(), x, np.where(lo == hi, "=", np.where(np.isinf(lo), "<", ">")),
                     np.where(np.isinf(lo), hi, lo))
        g.ObjCon = offset
        try:
            g.optimize()
        except gp.GurobiError as e:
            return print(f"gurobipy cannot solve this model ({e}): HiGHS instead", file=sys.stderr)
        return dict(solver="gurobi", status="optimal" if g.Status == 2 else "time limit", objective=g.ObjVal,
                    gap=g.MIPGap, bound=g.ObjBound, seconds=g.Runtime,
                    **dict(zip(LABEL_KEYS, decision_form(mip, x.X, states))))


def solve(mip, price, solver="highs", **kw):
    label = solve_gurobi(mip, price, **kw) if solver == "gurobi" else None
    return label or solve_highs(mip, price, **kw)


def check_schedule(inst, base, solar, price, recurring_start, oneoff_start, battery_state, detail=None):
    """Independent checker: every constraint family and the cost from the decision form alone -> (cost, violations
    by family). A dict `detail` gets the charge, room use (small/large) and per precedence pair the days too late."""
    T, (wd, monday), value = len(price), weekdays(inst), 0.0
    bad = dict(start=0, rooms=0, precedence=0, battery=0, power=0,
               oneoff=int(len(recurring_start) != inst["n_rec"] or len(oneoff_start) != inst["n_oneoff"]))
    rooms, load, day_of = np.zeros((2, T)), np.zeros(T), {}
    for a, (s, dur) in enumerate(zip(np.r_[recurring_start, oneoff_start].astype(int), inst["dur"])):
        rec = a < inst["n_rec"]
        if not rec and s == T:                          # an unscheduled once-off
            continue
        d, off = divmod(s, WEEK_OPTIONS if rec else DAY)
        if not (0 <= d < 5 and 0 <= off and off + dur <= WEEK_OPTIONS and monday + d < inst["days"] if rec
                else 0 <= s < T and off + dur <= DAY):
            bad["start"] += 1
            continue
        runs = [day * DAY + NINE + off for day in range(monday + d, inst["days"], 7)] if rec else [s]
        if not rec:
            value += inst["value"][a] - inst["penalty"][a] * (not (wd[d] < 5 and off >= NINE and off + dur <= FIVE))
        day_of[a] = d
        for r in runs:
            rooms[inst["large"][a], r:r + dur] += inst["rooms"][a]
            load[r:r + dur] += inst["rooms"][a] * inst["load"][a]
    bad["rooms"] = int((rooms[0] > inst["n_small"]).sum() + (rooms[1] > inst["n_large"]).sum())
    late = [(p not in day_of) or max(0, day_of[p] + 1 - day_of[a]) if a in day_of else 0
            for a, ps in enumerate(inst["prec"]) for p in ps]
    bad["precedence"] = int(np.count_nonzero(late))
    st = np.asarray(battery_state).reshape(len(inst["cap"]), T)
    bad["battery"] += int((~np.isin(st, [CHARGE, IDLE, DISCHARGE])).sum())
    zc, zd = (st == CHARGE) * 1.0, (st == DISCHARGE) * 1.0
    charge = inst["cap"][:, None] + np.cumsum(0.25 * inst["m"][:, None] * (zc - zd), axis=1)
    bad["battery"] += int(((charge < -1e-6) | (charge > inst["cap"][:, None] + 1e-6)).sum())
    grid = base - solar + load + (inst["m"] / np.sqrt(inst["eff"])) @ zc - (inst["m"] * np.sqrt(inst["eff"])) @ zd
    bad["power"] = int((grid < -1e-6).sum())
    if detail is not None:
        detail.update(charge=charge, rooms=rooms, prec=np.array(late, float))
    return float(0.25 / 1000 * price @ grid - value), bad


# ================================================================ label generation
LABEL_KEYS = tuple("recurring_start oneoff_start battery_state objective bound gap status solver seconds".split())
_WORKER = {}                                     # per solver process: the MIP, STL parts and reference label


def save_label(path, label, price, inst, base, solar, **extra):
    """Check the schedule (zero violations, same cost) and write it atomically as one .npz."""
    cost, bad = check_schedule(inst, base, solar, price, *(label[k] for k in LABEL_KEYS[:3]))
    if any(bad.values()) or abs(cost - label["objective"]) > 1e-6 * max(1.0, abs(cost)):
        raise RuntimeError(f"{path.name}: the checker finds {bad}, cost {cost} vs objective {label['objective']}")
    buf = io.BytesIO()
    np.savez(buf, price=price, **{k: label[k] for k in LABEL_KEYS}, **extra)
    atomic_write_bytes(path, buf.getvalue())


def load_label(path):
    with np.load(path) as z:
        return {k: z[k].item() if z[k].ndim == 0 else z[k] for k in z.files}


def _solve_scenario(job):
    """Worker: label scenario i, warm-started from the reference (model built once per process and folder)."""
    cfg, i = job
    if _WORKER.get("out") != cfg["out"]:
        _WORKER.update(out=cfg["out"], mip=build_mip(cfg["inst"], cfg["base"], cfg["solar"], cfg["battery"]),
                       parts=stl_parts(cfg["price"]), ref=load_label(cfg["out"] / "reference.npz"))
    price, _ = price_scenario(_WORKER["parts"], cfg["block"], cfg["seed"], i)
    label = solve(_WORKER["mip"], price, start=_WORKER["ref"], **cfg["solve"])
    save_label(cfg["out"] / f"label_{i:05d}.npz", label, price, cfg["inst"], cfg["base"], cfg["solar"],
               index=i, seed=cfg["seed"], block=cfg["block"])
    return label


def generate_labels(inst, base, solar, price, out, n, seed=0, block=DAY, workers=1, shard=(0, 1), battery="auto",
                    limit=None, progress=True, **solve_kw):
    """Label this shard's scenarios of 0..n-1 into out/label_#####.npz, skipping those there (resume), all
    warm-started from out/reference.npz (the real price's label) so a label does not depend on interrupts."""
    from tqdm import tqdm
    (out := Path(out)).mkdir(parents=True, exist_ok=True)
    config = dict(instance=inst["name"], seed=seed, block=block, battery=battery, **solve_kw)
    if (out / "config.json").exists() and json.loads((out / "config.json").read_text()) != config:
        raise SystemExit(f"{out} holds labels made with other settings ({out / 'config.json'}): use another --out")
    atomic_write_json(out / "config.json", config)
    cfg = dict(inst=inst, base=base, solar=solar, price=price, out=out, solve=solve_kw, **config)
    if not (out / "reference.npz").exists():
        label = solve(build_mip(inst, base, solar, battery), price, **solve_kw)
        save_label(out / "reference.npz", label, price, inst, base, solar, index=-1, seed=seed, block=block)
    todo = [i for i in range(shard[0], n, shard[1]) if not (out / f"label_{i:05d}.npz").exists()][:limit]
    with multiprocessing.get_context("spawn").Pool(workers) if workers > 1 else contextlib.nullcontext() as pool:
        results = (pool.imap_unordered if pool else map)(_solve_scenario, [(cfg, i) for i in todo])
        with tqdm(results, total=len(todo), disable=not progress, desc=f"labels {inst['name']}", unit="label") as bar:
            for label in bar:
                bar.set_postfix(s=f"{label['seconds']:.1f}", gap=f"{label['gap']:.4f}")
    if not (recs := [load_label(p) for p in sorted(out.glob("label_*.npz"))]):   # the folder's summary.json
        return {}
    secs, gaps = (np.array([r[k] for r in recs]) for k in ("seconds", "gap"))
    summary = dict(labels=len(recs), seconds_mean=secs.mean(), seconds_median=np.median(secs), seconds_max=secs.max(),
                   gap_mean=gaps.mean(), gap_max=gaps.max(), solver=sorted({r["solver"] for r in recs}),
                   status={s: sum(r["status"] == s for r in recs) for s in {r["status"] for r in recs}})
    atomic_write_json(out / "summary.json", summary)
    return summary


# ================================================================ 4.3 model
NEG = -1e9                                     # logit of a start that the solver's columns rule out
ARCH = ("conv", "kernels", "pool", "mixer", "head")


def load_dataset(inst, base, solar, folder, seed=0, limit=None):
    """The labels of scenarios 0..limit-1 in `folder` as arrays, split 80/10/10 by a draw per scenario index and
    seed: a scenario stays in its split as labels are added (the first draws go to test and val if too few)."""
    paths = [p for p in sorted(Path(folder).glob("label_*.npz")) if limit is None or int(p.stem[6:]) < limit]
    if len(recs := [load_label(p) for p in paths]) < 3:
        raise SystemExit(f"{folder}: {len(recs)} labels; make some with --mode labels first")
    ds = dict(inst=inst, base=base, solar=solar, **{k: np.array([r[key] for r in recs], t) for k, key, t in (
        ("price", "price", float), ("rec", "recurring_start", int), ("one", "oneoff_start", int), ("gap", "gap", float),
        ("bat", "battery_state", int), ("obj", "objective", float), ("seconds", "seconds", float),
        ("index", "index", int))})
    ref = Path(folder) / "reference.npz"                # the real price's label: a feasible class schedule
    ds["fallback"] = tuple(load_label(ref)[k] for k in LABEL_KEYS[:2]) if ref.exists() else (ds["rec"][0], ds["one"][0])
    u = np.array([np.random.default_rng([seed, i]).random() for i in ds["index"]])
    order, n_test = np.argsort(u), max(1, np.sum(u < 0.1))
    n_val = min(len(u) - 1, n_test + max(1, np.sum((u >= 0.1) & (u < 0.2))))          # (and one to train)
    ds["split"] = dict(test=np.sort(order[:n_test]), val=np.sort(order[n_test:n_val]), train=np.sort(order[n_val:]))
    return ds


def head_features(inst):
    """Per head, scaled to max 1: rooms, large, load, duration, value, penalty, #predecessors | cap, m, eff."""
    f = np.zeros((len(inst["dur"]) + len(inst["cap"]), 7))
    f[:len(inst["dur"])] = np.stack([inst[k] for k in ("rooms", "large", "load", "dur", "value", "penalty")]
                                    + [[len(p) for p in inst["prec"]]], 1)
    f[len(inst["dur"]):, :3] = np.stack([inst["cap"], inst["m"], inst["eff"]], 1)
    for rows in np.split(f, [len(inst["dur"])]):       # classes and batteries each scaled on their own
        rows /= np.maximum(np.abs(rows).max(0), 1e-9)
    return torch.tensor(f, dtype=torch.float32)


def option_masks(inst, T):
    """The starts the solver's columns allow (duration, day windows of the precedences); 'unscheduled' too."""
    cols, n_rec = start_columns(inst), inst["n_rec"]
    rec, one = np.zeros((n_rec, 5 * WEEK_OPTIONS), bool), np.zeros((len(inst["dur"]) - n_rec, T + 1), bool)
    r, one[:, T] = cols["cls"] < n_rec, True
    rec[cols["cls"][r], cols["start"][r]] = one[cols["cls"][~r] - n_rec, cols["start"][~r]] = True
    return torch.from_numpy(rec), torch.from_numpy(one)


class CSPNet(nn.Module):
    """Conv1d x3 (BN, ReLU), max-pool -> mixer MLP -> a head per class and battery (w1 -> w2 -> options) as grouped
    products: one matmul (shared input), one bmm, one bmm per output size. Starts the MIP rules out get NEG.
    The convolutions run as (1, k) Conv2d on a channels-last input: the same function, oneDNN's fast path."""

    def __init__(self, inst, T, conv=(64, 128, 64), kernels=(8, 5, 3), pool=32, mixer=(2048, 1024), head=(512, 256)):
        def uniform(*shape, fan_in):                    # the grouped heads' weights: U(+-1/sqrt(fan_in)) as nn.Linear
            return nn.Parameter(torch.empty(*shape).uniform_(-fan_in ** -0.5, fan_in ** -0.5))
        super().__init__()
        layers, c_in, L = [], 3, T
        for c, k in zip(conv, kernels):
            layers, c_in, L = layers + [nn.Conv2d(c_in, c, (1, k)), nn.BatchNorm2d(c), nn.ReLU()], c, L - k + 1
        self.features = nn.Sequential(*layers, nn.MaxPool2d((1, pool)), nn.Flatten())
        mix, n = [], c_in * (L // pool)
        for w in mixer:
            mix, n = mix + [nn.Linear(n, w), nn.BatchNorm1d(w), nn.ReLU()], w
        self.mixer = nn.Sequential(*mix)
        self.register_buffer("feats", head_features(inst))
        H, nf, (w1, w2) = *self.feats.shape, head
        self.groups = ((inst["n_rec"], 5 * WEEK_OPTIONS), (inst["n_oneoff"], T + 1), (len(inst["cap"]), 3 * T))
        self.w1, self.w1f = nn.Linear(n, H * w1), uniform(H, nf, w1, fan_in=n + nf)
        self.w2, self.b2 = uniform(H, w1, w2, fan_in=w1), uniform(H, 1, w2, fan_in=w1)
        self.bn1, self.bn2 = nn.BatchNorm1d(H * w1), nn.BatchNorm1d(H * w2)
        self.w3 = nn.ParameterList([uniform(k, w2, o, fan_in=w2) for k, o in self.groups])
        self.b3 = nn.ParameterList([uniform(k, 1, o, fan_in=w2) for k, o in self.groups])
        for name, mask in zip(("mask_rec", "mask_one"), option_masks(inst, T)):
            self.register_buffer(name, mask)

    def trunk(self, x):                                 # (B, 3, T) -> conv features -> mixer -> (B, mixer[-1])
        return self.mixer(self.features(x[:, :, None].contiguous(memory_format=torch.channels_last)))

    def forward(self, x):
        z = self.trunk(x)
        B, H = len(z), len(self.feats)
        h = self.w1(z) + torch.einsum("hf,hfo->ho", self.feats, self.w1f).reshape(-1)
        h = torch.baddbmm(self.b2, F.relu(self.bn1(h)).view(B, H, -1).transpose(0, 1), self.w2)   # (H, B, w2)
        h = F.relu(self.bn2(h.transpose(0, 1).reshape(B, -1))).view(B, H, -1).transpose(0, 1)
        ends = np.cumsum([0] + [k for k, _ in self.groups])
        rec, one, bat = (torch.baddbmm(b, h[i:j], w).transpose(0, 1)      # (batch, heads of a kind, options)
                         for i, j, w, b in zip(ends, ends[1:], self.w3, self.b3))
        return dict(rec=rec.masked_fill(~self.mask_rec, NEG), one=one.masked_fill(~self.mask_one, NEG),
                    bat=bat.reshape(B, bat.shape[1], -1, 3))


def make_model(ds, cfg):
    return CSPNet(ds["inst"], ds["price"].shape[1], **{k: cfg[k] for k in ARCH})


def inputs(ds, norm):
    """(N, 3, T): price, base load and solar, each standardised with the training set's mean and std."""
    x = np.stack(np.broadcast_arrays(ds["price"], ds["base"], ds["solar"]), 1)
    return torch.tensor((x - norm["mean"][:, None]) / norm["std"][:, None], dtype=torch.float32)


# ================================================================ 4.3 loss
def label_loss(out, ds, rows):
    """Cross-entropy of every head; per instance, the mean over each kind's heads summed over the three kinds."""
    ce = lambda z, y: F.cross_entropy(z.flatten(0, -2), y.flatten(), reduction="none").view(len(y), -1).mean(1)
    return sum(ce(out[k], torch.as_tensor(ds[k][rows])) for k in ("rec", "one", "bat"))


def battery_charge(onehot, cap, m):
    """Charge (batch, battery, slot) of one-hot states (charge, idle, discharge): starts full, moves 0.25 m a slot."""
    return cap[:, None] + torch.cumsum((onehot[..., CHARGE] - onehot[..., DISCHARGE]) * (0.25 * m)[:, None], -1)


def battery_violation(logits, inst, k=20.0):
    """nu_b (eq. 18): mean of max(0, -C) + max(0, C - cap) over batteries and slots; argmax states, eq. 16 gradient."""
    cap, m = (torch.as_tensor(inst[x], dtype=logits.dtype) for x in ("cap", "m"))
    charge = battery_charge(common.onehot_surrogate(logits, k), cap, m)
    return (F.relu(-charge) + F.relu(charge - cap[:, None])).mean((1, 2))


# ================================================================ 4.3 train
def predict(model, x, batch=32):
    """Network outputs (float32) in the precision of the model's weights (.bfloat16() for --bf16)."""
    x = x.to(next(model.parameters()).dtype)
    with torch.no_grad():
        outs = [model.eval()(x[i:i + batch]) for i in range(0, len(x), batch)]
    return {k: torch.cat([o[k] for o in outs]).float() for k in outs[0]}


def raw_decode(out):
    return tuple(out[k].argmax(-1).numpy() for k in ("rec", "one", "bat"))


def trained_on(ck):                                   # its training scenarios (all, if it predates their record)
    return set(ck.get("scenarios", {}).get("train", range(10 ** 6)))


def train(args, ds, run_dir):
    """FC (label loss) or LDF (+ lambda_b nu_b, lambda_b by eq. 20 after each epoch), selected by validation AR
    (fc) or mu-loss (ldf) into best_<ar|mu>.pt; last.pt holds the optimizer and state to resume."""
    ldf, idx, run_dir, crit = args.model == "ldf", ds["split"], Path(run_dir), "mu" if args.model == "ldf" else "ar"
    pre = torch.load(args.pretrained, weights_only=False) if args.pretrained else None
    scen = {k: ds["index"][v].tolist() for k, v in idx.items()}     # scenario indices: checkpoints compare them
    if pre and (seen := len(trained_on(pre) & {*scen["val"], *scen["test"]})):
        raise SystemExit(f"{args.pretrained} trained on {seen} validation/test scenarios: retrain it on these labels")
    cfg = {**vars(args), **({k: pre["config"][k] for k in ARCH} if pre else {})}
    raw = inputs(ds, dict(mean=np.zeros(3), std=np.ones(3))).numpy()[idx["train"]]
    norm = pre["norm"] if pre else dict(mean=raw.mean((0, 2)), std=raw.std((0, 2)) + 1e-6)
    set_seed(args.seed)
    model = make_model(ds, cfg)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, fused=True)   # one pass (CPU too)
    state = dict(epoch=0, multiplier=args.lambda0 if ldf else 0.0, history=[], best={}, since_best=0)
    resume = (run_dir / "last.pt").exists() and not args.fresh
    ck = torch.load(run_dir / "last.pt", weights_only=False) if resume else pre
    if resume and (ck["config"]["model"] != args.model or ck.get("scenarios") != scen):
        raise SystemExit(f"{run_dir}/last.pt: another model or labels; pass --fresh or another --run-dir")
    if ck:                                               # last.pt to resume, else --pretrained
        model.load_state_dict(ck["model"])
    if resume:
        opt.load_state_dict(ck["optimizer"])
        state, norm = ck["state"], ck["norm"]
        print(f"resuming {run_dir}/last.pt at epoch {state['epoch']} (lambda_b {state['multiplier']:.4g})")
    x = inputs(ds, norm)
    save = lambda name, **kw: common.atomic_torch_save(dict(model=model.state_dict(), norm=norm, config=cfg,
                                                            scenarios=scen, epoch=state["epoch"], **kw), run_dir / name)
    for epoch in range(state["epoch"], args.epochs):
        if state["since_best"] >= args.patience:        # (also when resuming a run that stopped early)
            break
        t0, sums = time.perf_counter(), np.zeros(3)
        perm = np.random.default_rng([args.seed, epoch]).permutation(idx["train"])
        for b in range(0, len(perm) - 1, args.batch_size):     # (batch norm needs two rows)
            rows = np.sort(perm[b:b + args.batch_size])
            out = model.train()(x[rows])
            lab = label_loss(out, ds, rows)
            nu = battery_violation(out["bat"], ds["inst"], args.k) if ldf else torch.zeros_like(lab)
            loss = (lab + state["multiplier"] * nu).mean()
            if not torch.isfinite(loss):
                raise SystemExit(f"loss {loss.item()} in epoch {epoch}: lower --lr or --step ({run_dir}/last.pt: good)")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if args.max_grad_norm > 0:                  # (the thesis' misspelt config key never clipped)
                nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            opt.step()
            sums += [loss.item() * len(rows), lab.sum().item(), nu.sum().item()]
        out = predict(copy.deepcopy(model).bfloat16() if args.bf16 else model, x[idx["val"]])
        val_nu = battery_violation(out["bat"], ds["inst"]).numpy()
        if ldf:                                          # eq. 20: lambda_b += step * sum of nu_b over the epoch
            state["multiplier"] = common.subgradient_step(state["multiplier"], args.step, sums[2])
        n, state["epoch"] = len(idx["train"]), epoch + 1
        row = dict(epoch=epoch + 1, loss=sums[0] / n, label_loss=sums[1] / n, nu_b=sums[2] / n,
                   val_ar=evaluate_schedules(ds, idx["val"], raw_decode(out))["ar_mean"], val_nu_b=val_nu.mean(),
                   val_mu_loss=common.mu_loss(label_loss(out, ds, idx["val"]).numpy(), val_nu, args.mu),
                   multiplier=state["multiplier"], seconds=time.perf_counter() - t0)
        state["history"].append(row)
        value = row["val_mu_loss" if ldf else "val_ar"]
        state["since_best"] += 1
        if value < state["best"].get(crit, (math.inf,))[0]:
            state["best"][crit], state["since_best"] = (value, epoch + 1), 0
            save(f"best_{crit}.pt", selected_by=crit, value=value)
        save("last.pt", optimizer=opt.state_dict(), state=state)
        print(" ".join(f"{k} {v:.4g}" for k, v in row.items()), flush=True)
    return run_dir / f"best_{crit}.pt"


# ================================================================ 4.4 evaluate
FAMILIES = ("battery min", "battery capacity", "min or capacity", "small rooms", "large rooms", "precedence")
DECODES = ("raw", "repaired", "redispatched")
THESIS = {"fc": (89.5, 1.136), "ldf": (58.0, 1.177)}   # the thesis: min-or-capacity % of slots violated, mean AR


def repair_batteries(states, inst):
    """Forward over slots: a charge or discharge that would leave [0, cap] becomes idle."""
    st, step, cap = states.copy(), 0.25 * inst["m"], inst["cap"]
    charge = np.broadcast_to(cap, st.shape[:-1]).astype(float)
    for t in range(st.shape[-1]):
        move = ((st[..., t] == CHARGE) * 1.0 - (st[..., t] == DISCHARGE)) * step
        bad = (charge + move < -1e-6) | (charge + move > cap + 1e-6)
        st[..., t][bad], charge = IDLE, charge + np.where(bad, 0.0, move)
    return st


def repair_classes(logits, inst, T, fallback):
    """Greedy in precedence order (recurring first, then the most confident ready class): each class at its best
    allowed start that keeps rooms and precedence feasible, else unscheduled -> (recurring, one-off, fell back)."""
    n_rec, n, (_, monday) = inst["n_rec"], len(inst["dur"]), weekdays(inst)
    use, room_cap = np.zeros((2, inst["days"], DAY)), np.array([inst["n_small"], inst["n_large"]])
    conf = [np.exp(l.max() - np.logaddexp.reduce(l)) for l in logits]
    start, day, todo = np.full(n, -1), np.full(n, -1), set(range(n))
    while todo:
        a = max((a for a in todo if not todo & set(inst["prec"][a])), key=lambda a: (a < n_rec, conf[a]))
        todo.remove(a)
        dur, size, need, ok = inst["dur"][a], inst["large"][a], inst["rooms"][a], logits[a] > NEG / 2
        earliest = max([day[p] + 1 if start[p] >= 0 else np.inf for p in inst["prec"][a]], default=0)
        occ = (np.stack([use[size, monday + d::7, NINE:FIVE].max(0, initial=0) for d in range(5)])
               if a < n_rec else use[size])             # recurring: the busiest week of each weekday
        fits = np.lib.stride_tricks.sliding_window_view(occ, dur, 1).max(-1) + need <= room_cap[size]
        grid = np.zeros((len(occ), occ.shape[1] if a >= n_rec else WEEK_OPTIONS), bool)
        grid[:, :fits.shape[1]] = fits & (np.arange(len(occ)) >= earliest)[:, None]
        ok[:grid.size] &= grid.reshape(-1)
        if not ok.any():                                # a recurring class fits nowhere
            return *fallback, True
        s = int(np.argmax(np.where(ok, logits[a], -np.inf)))
        if a < n_rec:
            start[a], day[a] = s, s // WEEK_OPTIONS
            use[size, monday + day[a]::7, NINE + s % WEEK_OPTIONS:NINE + s % WEEK_OPTIONS + dur] += need
        elif s < T:
            start[a], day[a] = s, s // DAY
            use[size, day[a], s % DAY:s % DAY + dur] += need
    return start[:n_rec], np.where(start[n_rec:] < 0, T, start[n_rec:]), False


def repaired_decode(out, ds):
    cls = [repair_classes(list(r) + list(o), ds["inst"], ds["price"].shape[1], ds["fallback"])
           for r, o in zip(out["rec"].double().numpy(), out["one"].double().numpy())]
    rec, one, fell = (np.array(x) for x in zip(*cls))
    return rec, one, repair_batteries(raw_decode(out)[2], ds["inst"]), fell


def evaluate_schedules(ds, rows, sched):
    """Through the checker: AR (eq. 17), % feasible, and per family (Tables 7-8) % of constraint instances violated
    and violation degree (kWh; rooms over; precedence pairs: days too late, 1 if the predecessor is missing)."""
    inst, cost, bad, fam = ds["inst"], [], [], []
    for j, i in enumerate(rows):
        det = {}
        c, b = check_schedule(inst, ds["base"], ds["solar"], ds["price"][i], *(s[j] for s in sched[:3]), detail=det)
        low, high = np.maximum(0, -det["charge"]), np.maximum(0, det["charge"] - inst["cap"][:, None])
        fam.append([(100 * (v > 1e-6).mean(), v.mean(), v.max()) if v.size else (0.0, 0.0, 0.0) for v in (
            low, high, low + high, *np.maximum(0, det["rooms"] - [[inst["n_small"]], [inst["n_large"]]]), det["prec"])])
        cost, bad = cost + [c], bad + [sum(b.values())]
    ar, fam = common.approximation_ratio(cost, ds["obj"][rows], gap=ds["gap"][rows]), np.array(fam)
    return dict(ar_mean=ar.mean(), ar_max=ar.max(), ar_min=ar.min(), feasible_pct=100 * np.mean(np.array(bad) == 0),
                fam={f: dict(pct_mean=v[:, 0].mean(), pct_max=v[:, 0].max(), degree_mean=v[:, 1].mean(),
                             degree_avg_max=v[:, 2].mean()) for f, v in zip(FAMILIES, fam.transpose(1, 0, 2))})


def evaluate(ds, checkpoints, bf16=False):
    """Tables 7-9 on the test split per checkpoint, raw argmax and repaired, with times per instance."""
    rows, results = ds["split"]["test"], {}
    for name, path in checkpoints.items():
        ck = torch.load(path, weights_only=False)
        if trained_on(ck) & set(ds["index"][rows]):
            raise SystemExit(f"{path} was trained on test scenarios (or predates their record): retrain it")
        model, x = make_model(ds, ck["config"]), inputs(ds, ck["norm"])[rows]
        model.load_state_dict(ck["model"])
        model = model.bfloat16() if bf16 else model
        predict(model, x, batch=len(rows))              # warm-up at the timed shape
        t = [time.perf_counter()]
        out = predict(model, x, batch=len(rows))
        t.append(time.perf_counter())
        *rep, fell = repaired_decode(out, ds)
        t.append(time.perf_counter())               # and the batteries re-dispatched exactly (DP) given the price
        dp = [[battery_dispatch(0.25 / 1000 * ds["price"][i], *(ds["inst"][k][b] for k in ("cap", "m", "eff")))[1]
               for b in range(len(ds["inst"]["cap"]))] for i in rows]
        t.append(time.perf_counter())
        results[name] = r = {d: {**evaluate_schedules(ds, rows, sch), "ms": ms} for d, sch, ms in zip(
            DECODES, (raw_decode(out), rep, (*rep[:2], np.array(dp))), np.cumsum(np.diff(t)) * 1000 / len(rows))}
        r.update(fallbacks=int(fell.sum()), solver_s=ds["seconds"][rows].mean(), n_test=len(rows), epoch=ck["epoch"],
                 n_train=len(ds["split"]["train"]), inference=f"{'bf16' if bf16 else 'fp32'}, "
                 f"{torch.get_num_threads()} thread(s)")
    return results


def markdown(results):
    """Tables 7 (% of constraint instances violated), 8 (violation degree) and 9 (AR, feasibility, time)."""
    rows, thesis = [(f"{n} | {d}", r[d]) for n, r in results.items() for d in DECODES], sorted({*results} & {*THESIS})
    head = "| model | decode | " + " | ".join(FAMILIES) + " |\n|" + "---|" * (len(FAMILIES) + 2)
    fam = lambda a, b, f: [f"| {k} | " + " | ".join(f"{v[a]:{f}} / {v[b]:{f}}" for v in s["fam"].values()) + " |"
                           for k, s in rows]
    r = next(iter(results.values()))
    return "\n".join([
        "Table 7: % of constraint instances violated, mean / max over test instances\n", head,
        *fam("pct_mean", "pct_max", ".1f"), *[f"| {n} (thesis) | raw | | | {THESIS[n][0]} / | | | |" for n in thesis],
        "\nTable 8: violation degree, mean / average of each instance's max\n", head,
        *fam("degree_mean", "degree_avg_max", ".3g"),
        "\nTable 9: approximation ratio (eq. 17), feasibility and time\n",
        "| model | decode | AR mean | AR max | AR min | feasible % | ms / instance (batched, CPU) |\n|" + "---|" * 7,
        *[f"| {k} | " + " | ".join(f"{s[c]:.4f}" for c in ("ar_mean", "ar_max", "ar_min"))
          + f" | {s['feasible_pct']:.0f} | {s['ms']:.1f} |" for k, s in rows],
        *[f"| {n} (thesis) | raw | {THESIS[n][1]} | | | | |" for n in thesis],
        f"\n{r['n_train']} training / {r['n_test']} test labels; solver {r['solver_s']:.1f} s per test label; "
        f"inference {r['inference']}; selected epoch and repairs that fell back to the reference label's classes: "
        + ", ".join(f"{k} {v['epoch']}, {v['fallbacks']}" for k, v in results.items())])


def run(args, ds):
    """Train, copy the selected checkpoint to --save (default <model>.pt), evaluate it on the test split."""
    run_dir, save = Path(args.run_dir or f"runs/csp-{args.model}"), Path(args.save or f"{args.model}.pt")
    atomic_write_bytes(save, train(args, ds, run_dir).read_bytes())
    results = evaluate(ds, {args.model: save}, args.bf16)
    atomic_write_json(run_dir / "results.json", results)
    atomic_write_bytes(run_dir / "results.md", markdown(results).encode())
    print(f"saved {save}\n{markdown(results)}")
    return results


# ================================================================ command line
def int_list(text):                                   # argparse reports a ValueError: invalid int_list value
    return tuple(int(x) for x in text.split(","))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawTextHelpFormatter,
                                epilog="examples (see README):\n  python csp_ldf.py --mode labels --instances 1000 "
                                "--workers 2\n  python csp_ldf.py --model fc; python csp_ldf.py --pretrained fc.pt\n"
                                "  python csp_ldf.py --mode evaluate --checkpoints fc=fc.pt ldf=ldf.pt   # Tables 7-9")
    p.add_argument("--mode", choices=["train", "evaluate", "labels", "validate", "figure2"], default="train")
    d = p.add_argument_group("data (thesis 4.1-4.2)")
    d.add_argument("--data-dir", help="challenge data (default: $CSP_DATA_DIR, data/ieee_cis, ../shared/data/ieee_cis)")
    d.add_argument("--instance", default="phase2_instance_small_0", help="instance file name without .txt")
    d.add_argument("--loads", choices=["forecast", "actual"], default="forecast",
                   help="base load and solar: the thesis' forecasts (default: its inputs and results) or actual values")
    d.add_argument("--block", type=positive_int, default=DAY, help="residual block in slots (default 96 = a day)")
    d.add_argument("--seed", type=int, default=0, help="scenario seed (scenario i uses (seed, i)); also split and init")
    d.add_argument("--max-labels", type=positive_int, help="only the labels of scenarios 0..N-1 (fixed splits)")
    s = p.add_argument_group("labels (thesis 4.1 MIP)")
    s.add_argument("--instances", type=positive_int, default=1000, help="scenarios to label (default 1000)")
    s.add_argument("--workers", type=positive_int, default=2, help="solver processes (default 2)")
    s.add_argument("--shard", default="0/1", help="k/n: label only scenarios i with i %% n == k (job arrays)")
    s.add_argument("--out", default="data/csp_labels", help="label folder (default data/csp_labels)")
    s.add_argument("--solver", choices=["highs", "gurobi"], default="highs", help="gurobi falls back to HiGHS")
    s.add_argument("--gap", type=nonnegative_float, default=0.01, help="relative MIP gap (default 0.01, as the thesis)")
    s.add_argument("--time-limit", type=positive_float, default=300.0, help="seconds per label (default 300)")
    s.add_argument("--threads", type=positive_int, default=1, help="solver threads per worker (default 1)")
    s.add_argument("--battery", choices=["auto", "dp"], default="auto", help=argparse.SUPPRESS)  # label configs name it
    t = p.add_argument_group("networks (thesis 4.3-4.4)")
    t.add_argument("--model", choices=["fc", "ldf"], help="fc (default) or ldf (the default with --pretrained)")
    t.add_argument("--pretrained", help="checkpoint to start from, e.g. fc.pt (its architecture and normalisation)")
    t.add_argument("--save", help="the selected checkpoint (default <model>.pt)")
    t.add_argument("--run-dir", help="last.pt, best_*.pt, results.{json,md} (default runs/csp-<model>)")
    t.add_argument("--fresh", action="store_true", help="start over instead of resuming <run-dir>/last.pt")
    t.add_argument("--checkpoints", nargs="+", default=["fc=fc.pt", "ldf=ldf.pt"], help="--mode evaluate: name=path")
    for name, kind, default, what in (
            ("epochs", positive_int, 30, ""), ("patience", positive_int, 10, "epochs without a better selection value"),
            ("batch-size", positive_int, 16, ""), ("lr", positive_float, 1e-3, "Adam (thesis 1e-3)"),
            ("step", nonnegative_float, 1e-3, "subgradient step of lambda_b, eq. 20 (thesis 1e-3)"),
            ("lambda0", nonnegative_float, 0.0, "initial lambda_b"), ("max-grad-norm", nonnegative_float, 1.0,
                                                                      "gradient clipping (thesis 1; 0 = off)"),
            ("k", positive_float, 20.0, "sharpness of the one-hot surrogate, eq. 16"),
            ("mu", nonnegative_float, 1.0, "mu of the LDF selection mu-loss, eq. 15"),
            ("torch-threads", nonnegative_int, 0, "torch CPU threads (0 = torch's default)"),
            ("conv", int_list, "64,128,64", "conv channels"), ("kernels", int_list, "8,5,3", "as the thesis code"),
            ("pool", positive_int, 32, "max-pool width"), ("mixer", int_list, "2048,1024", "mixer widths"),
            ("head", int_list, "512,256", "head widths")):
        t.add_argument(f"--{name}", type=kind, default=kind(str(default)), help=f"{what} (default {default})".lstrip())
    t.add_argument("--bf16", action="store_true", help="inference (validation, tables) with bfloat16 weights: fast on\n"
                   "CPUs with AMX (oneDNN); training stays float32")
    args = p.parse_args(argv)
    try:
        args.shard = tuple(int(x) for x in args.shard.split("/"))
        assert len(args.shard) == 2 and 0 <= args.shard[0] < args.shard[1]
    except (ValueError, AssertionError):
        p.error(f"--shard: expected k/n with 0 <= k < n, got {args.shard!r}")
    if len(args.conv) != len(args.kernels) or len(args.head) != 2 or not all("=" in c for c in args.checkpoints):
        p.error("--conv and --kernels need as many values, --head two, --checkpoints name=path each")
    args.model = args.model or ("ldf" if args.pretrained else "fc")
    return args


def main(argv=None):
    args = parse_args(argv)
    set_seed(args.seed)
    torch.set_num_threads(args.torch_threads or torch.get_num_threads())
    data = find_data_dir(args.data_dir)
    inst = read_instance(data / "instances" / f"{args.instance}.txt")
    (base, solar), price = read_loads(data, args.loads), read_price(data)
    solve_kw = dict(solver=args.solver, gap=args.gap, time_limit=args.time_limit, threads=args.threads)
    labels = Path(args.out) / f"{inst['name']}-{args.loads}-block{args.block}-seed{args.seed}"
    if args.mode == "train":
        run(args, load_dataset(inst, base, solar, labels, args.seed, args.max_labels))
    elif args.mode == "evaluate":
        results = evaluate(load_dataset(inst, base, solar, labels, args.seed, args.max_labels),
                           dict(c.split("=", 1) for c in args.checkpoints), args.bf16)
        atomic_write_json((out := Path(args.run_dir or "runs/csp")) / "tables.json", results)
        atomic_write_bytes(out / "tables.md", markdown(results).encode())
        print(markdown(results))
    elif args.mode == "figure2":                       # thesis Figure 2: scenarios over the real prices
        import matplotlib.pyplot as plt
        plt.figure(figsize=(12, 4))
        for i in range(3):
            plt.plot(price_scenario(stl_parts(price), args.block, args.seed, i)[0], lw=0.6, label=f"scenario {i}")
        plt.plot(price, "k", lw=0.8, label="VIC1 RRP, Nov 2020"), plt.xlabel("slot (15 min from 1 Nov 2020 AEDT)")
        plt.ylabel("$/MWh"), plt.legend(), plt.savefig("data/figure2.png", dpi=120)
    elif args.mode == "validate":                      # the MIP on the real prices, against the thesis on small_0
        label = solve(build_mip(inst, base, solar), price, **solve_kw)
        print(f"{inst['name']}: {label['objective']:.2f} ({label['solver']}, gap {100 * label['gap']:.2f}%, "
              f"{label['seconds']:.0f} s); thesis on small_0: {THESIS_SMALL0} (Gurobi, gap 0.88%; must be within 1%)")
    else:
        print(json.dumps(generate_labels(inst, base, solar, price, labels, args.instances, args.seed, args.block,
                                         args.workers, args.shard, args.battery, **solve_kw), default=float))


if __name__ == "__main__":
    main()
