#!/usr/bin/env python3
"""Class scheduling (CSP) with the Lagrangian dual framework, thesis chapter 4 (Keegan 2023).

In the thesis' order: instances (4.1) -> price scenarios (4.2) -> MIP labels (4.1) -> model -> loss
-> train -> evaluate (the last four arrive with the networks).

Time is 2880 slots of 15 min, November 2020 local time (AEDT): slot t is day t // 96 (day 0 is
Sunday 1 Nov), time of day t % 96 (9:00 = 36, 17:00 = 68). A schedule in *decision form*, as labels
store it and as the networks will predict it:
  recurring_start[a]   option 32*weekday + offset: weekday 0..4 = Monday..Friday of the first week
                       that contains a Monday, offset 0..31 = slots after 9:00; valid when
                       offset + duration <= 32 (ends by 17:00). The class repeats every week.
  oneoff_start[a]      start slot 0..2879 (the class ends the day it starts), or 2880 = unscheduled.
  battery_state[b, t]  0 = charge, 1 = idle, 2 = discharge (the challenge's submission codes).
Cost: sum_t 0.25/1000 * price_t * grid_t - sum of one-off values, grid_t = base_t - solar_t +
class load_t + sum_b (m_b/sqrt(eff_b) [charge] - m_b*sqrt(eff_b) [discharge]) >= 0; a battery starts
full and moves 0.25*m_b kWh per slot (the thesis' c9 and network code dropped the 0.25).
"""
import argparse
import datetime
import json
import math
import multiprocessing
import os
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from common import atomic_write_bytes, atomic_write_json, nonnegative_float, positive_float, positive_int, set_seed

DAY, NINE, FIVE = 96, 36, 68                   # slots per day; 9:00 and 17:00 as slots of the day
WEEK_OPTIONS = 32                              # recurring offsets 9:00..16:45 -> option = 32*weekday + offset
NOVEMBER = dict(days=30, first_weekday=datetime.date(2020, 11, 1).weekday())  # Sunday
CHARGE, IDLE, DISCHARGE = 0, 1, 2
THESIS_SMALL0 = 16530.94                       # thesis_mip_results/small_0/Info.txt, Gurobi, 1% gap
DOWNLOAD = ("the IEEE-CIS 3rd Technical Challenge data (IEEE DataPort, 'IEEE-CIS Technical Challenge on "
            "Predict+Optimize for Renewable Energy Scheduling'); see ../shared/data/ieee_cis/README.md for the layout")


# ================================================================ 4.1 instances and time series
def find_data_dir(arg=None):
    """--data-dir, then $CSP_DATA_DIR, then data/ieee_cis/, then ../shared/data/ieee_cis/ (repo-relative)."""
    here = Path(__file__).resolve().parent
    for d in [arg, os.environ.get("CSP_DATA_DIR"), here / "data/ieee_cis", here.parent / "shared/data/ieee_cis"]:
        if d and (Path(d) / "instances").is_dir():
            return Path(d)
    raise SystemExit(f"CSP data not found (--data-dir, $CSP_DATA_DIR, data/ieee_cis/, ../shared/data/ieee_cis/): "
                     f"download {DOWNLOAD}")


LINE_FORMAT = {  # tag: (field types, what the line must look like); '*' = that many predecessor ids follow
    "ppoi": ("iiiii", "ppoi <#buildings> <#solar> <#batteries> <#recurring> <#once-off>"),
    "b": ("iii", "b <building id> <#small rooms> <#large rooms>"),
    "s": ("ii", "s <solar id> <building id>"),
    "c": ("iifff", "c <battery id> <building id> <capacity kWh> <max power kW> <efficiency in (0,1]>"),
    "r": ("iiSfii*", "r <id> <#rooms> <S|L> <load kW> <duration 1..32> <#predecessors> <predecessor ids>"),
    "a": ("iiSfiffi*", "a <id> <#rooms> <S|L> <load kW> <duration 1..96> <value> <penalty> <#predecessors> <ids>"),
}


def read_instance(path):
    """Parse a challenge `ppoi` file. Classes are numbered recurring first, then once-off; a malformed
    line raises ValueError naming the file, the line number and what was expected."""
    path = Path(path)
    header, rooms, batteries, cls = None, np.zeros(2, int), [], []
    for no, line in enumerate(path.read_text().splitlines(), 1):
        f = line.split()
        if not f:
            continue
        types, form = LINE_FORMAT.get(f[0], (None, "a line starting with ppoi, b, s, c, r or a"))
        try:
            assert types is not None and (header is not None) == (f[0] != "ppoi")
            vals = [int(x) if t == "i" else float(x) if t == "f" else "SL".index(x) for t, x in zip(types.rstrip("*"), f[1:])]
            n_fixed = len(types.rstrip("*"))
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
        raise ValueError(f"{path}: header 'ppoi ...' does not match the {len(batteries)} c, "
                         f"{len(cls)} r/a lines that follow (or is missing)")
    inst = {k: np.array([c[k] for c in cls]) for k in ("oneoff", "rooms", "large", "load", "dur", "value", "penalty")}
    cap, m, eff = (np.array(x, float).reshape(-1) for x in zip(*batteries)) if batteries else [np.zeros(0)] * 3
    inst.update(name=path.stem, n_rec=header[3], n_oneoff=header[4], prec=[c["prec"] for c in cls],
                n_small=int(rooms[0]), n_large=int(rooms[1]), cap=cap, m=m, eff=eff, **NOVEMBER)
    return inst


def read_price(data_dir):
    """VIC1 RRP ($/MWh) of November 2020; each 30-min row (stamped at its end) covers two slots."""
    f = data_dir / "price/PRICE_AND_DEMAND_202011_VIC1.csv"
    rows = [r.split(",") for r in f.read_text().splitlines()[1:] if r.strip()]
    if len(rows) != 1440 or rows[0][1] != "2020/11/01 00:30:00" or rows[-1][1] != "2020/12/01 00:00:00":
        raise ValueError(f"{f}: expected 1440 half-hour rows from 2020/11/01 00:30:00 to 2020/12/01 00:00:00")
    return np.repeat(np.array([float(r[3]) for r in rows]), 2)


def read_loads(data_dir, which="forecast"):
    """(base load, solar) in kW for the 2880 local slots: sums of the Building* and Solar* series.
    forecast: the thesis' Forecasts-sample.csv (UTC), shifted 11 h to AEDT as the thesis does
    (drop the last 44 values, prepend values 52..95). actual: nov_data.tsf from 2020-10-31 13:00 UTC;
    a missing value ('?') becomes the series' November mean at that time of day."""
    series = {}
    if which == "forecast":
        for row in (data_dir / "thesis_inputs/Forecasts-sample.csv").read_text().splitlines():
            name, *vals = row.split(",")
            v = np.array(vals, float)
            series[name] = np.concatenate([v[52:96], v[:-44]])
    else:
        start = datetime.datetime(2020, 10, 31, 13)
        for row in (data_dir / "energy_tsf/nov_data.tsf").read_text().splitlines():
            if not row.strip() or row[0] in "#@":
                continue
            name, stamp, vals = row.split(":", 2)
            i = int((start - datetime.datetime.strptime(stamp, "%Y-%m-%d %H-%M-%S")).total_seconds()) // 900
            v = np.array([np.nan if x == "?" else float(x) for x in vals.split(",")[i:i + 2880]]).reshape(30, DAY)
            seen = (~np.isnan(v)).sum(0)
            fill = np.where(seen > 0, np.nansum(v, 0) / np.maximum(seen, 1), np.nanmean(v))
            series[name] = np.where(np.isnan(v), fill, v).reshape(-1)
    total = lambda p: sum(v for k, v in series.items() if k.startswith(p))
    return total("Building"), total("Solar")


# ================================================================ 4.2 price scenarios
def stl_parts(price):
    """STL decomposition (statsmodels, seasonal period one day = 96 slots): trend, seasonal, residual."""
    from statsmodels.tsa.seasonal import STL
    fit = STL(price, period=DAY).fit()
    return np.asarray(fit.trend), np.asarray(fit.seasonal), np.asarray(fit.resid)


def price_scenario(parts, block, seed, index):
    """One scenario (thesis 4.2): trend + seasonal + residual blocks of `block` slots drawn with
    replacement and concatenated to the month. A block that fills slots p..p+block starts at a slot
    with the same time of day as p (so a day-long block is one whole day of residuals).
    Returns (prices, block starts); seeded by (seed, index), so any shard makes the same scenario."""
    trend, seasonal, resid = parts
    rng, T = np.random.default_rng([seed, index]), len(resid)
    out, starts = np.empty(T), []
    for p in range(0, T, block):
        n = min(block, T - p)
        choices = np.arange(p % DAY, T - n + 1, DAY)
        s = int(rng.choice(choices)) if len(choices) else int(rng.integers(0, T - n + 1))
        out[p:p + n] = resid[s:s + n]
        starts.append(s)
    return trend + seasonal + out, np.array(starts)


def plot_figure2(price, parts, path, n=3, block=DAY, seed=0):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(12, 4))
    for i in range(n):
        ax.plot(price_scenario(parts, block, seed, i)[0], lw=0.6, alpha=0.8, label=f"scenario {i}")
    ax.plot(price, "k", lw=0.8, label="VIC1 RRP, Nov 2020")
    ax.set(xlabel="slot (15 min, from 1 Nov 2020 00:00 AEDT)", ylabel="$/MWh", title="Figure 2: price scenarios")
    ax.legend()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    print(f"wrote {path}")


# ================================================================ 4.1 the MIP
def weekdays(inst):
    wd = (inst["first_weekday"] + np.arange(inst["days"])) % 7
    return wd, int(np.argmax(wd == 0))     # weekday of each day, first Monday


def day_windows(inst):
    """Earliest and latest allowed day of each class from the precedence graph (recurring: weekday
    0..4; once-off: day of the month). A predecessor must run on an earlier day."""
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
    """The thesis' columns: one binary per (class, allowed start). Returns a dict with per-column
    class, start (option or slot), day (weekday or day of month) and value, plus `cover`, the
    slot x column incidence matrix (CSC, 1 where the column's class runs)."""
    wd, monday = weekdays(inst)
    lo, hi = day_windows(inst)
    cls, start, day, value, slots = [], [], [], [], []
    for a, dur in enumerate(inst["dur"]):
        if a < inst["n_rec"]:
            offs = np.arange(WEEK_OPTIONS - dur + 1)
            for d in range(lo[a], hi[a] + 1):
                occ = np.arange(monday + d, inst["days"], 7)
                if len(occ):
                    start.append(WEEK_OPTIONS * d + offs)
                    day.append(np.full(len(offs), d))
                    value.append(np.zeros(len(offs)))
                    cls.append(np.full(len(offs), a))
                    slots += [(occ[:, None] * DAY + NINE + o + np.arange(dur)).ravel() for o in offs]
        else:
            d, s = np.divmod(np.arange(lo[a] * DAY, inst["days"] * DAY), DAY)
            d, s = d[s + dur <= DAY], s[s + dur <= DAY]
            business = (wd[d] < 5) & (s >= NINE) & (s + dur <= FIVE)
            start.append(d * DAY + s)
            day.append(d)
            value.append(np.where(business, inst["value"][a], inst["value"][a] - inst["penalty"][a]))
            cls.append(np.full(len(d), a))
            slots += list(start[-1][:, None] + np.arange(dur))
    if not all(np.isin(np.arange(inst["n_rec"]), np.concatenate(cls))):
        raise ValueError(f"{inst['name']}: a recurring class has no feasible start")
    lens = np.array([len(s) for s in slots])
    cover = sp.csc_matrix((np.ones(lens.sum()), np.concatenate(slots), np.r_[0, np.cumsum(lens)]),
                          shape=(inst["days"] * DAY, len(slots)))
    return dict(cls=np.concatenate(cls), start=np.concatenate(start), day=np.concatenate(day),
                value=np.concatenate(value).astype(float), cover=cover)


def build_mip(inst, base, solar, battery="auto"):
    """Rows and columns of the thesis' MIP as sparse arrays, everything but the price-dependent
    objective. battery='dp': the grid >= 0 rows can never bind (base - solar >= every battery
    discharging at once), so the batteries separate from the classes and battery_dispatch solves
    them exactly; 'mip': batteries as binaries z^c, z^d and charge C inside the MIP; 'auto': dp when
    exact. Precedence uses running sums E[p, d] = [p scheduled before day d] (sparse rows)."""
    cols, T = start_columns(inst), len(base)
    n_x, B = len(cols["cls"]), len(inst["cap"])
    headroom = base - solar - np.sum(inst["m"] * np.sqrt(inst["eff"]))
    if battery == "auto":
        battery = "dp" if (headroom >= 0).all() else "mip"
    if battery == "dp" and (headroom < 0).any():
        raise ValueError("--battery dp is not exact here: grid >= 0 can bind; use mip")
    preds = sorted({p for ps in inst["prec"] for p in ps})
    n_days = np.where(np.array(preds) < inst["n_rec"], 5, inst["days"]) if preds else []
    e_index, n = {}, n_x                                  # E[p, d] for d >= 1
    for p, nd in zip(preds, n_days):
        for d in range(1, nd):
            e_index[p, d], n = n, n + 1
    zc = n + np.arange(B * T).reshape(B, T) if battery == "mip" else None
    n_var = n + (3 * B * T if battery == "mip" else 0)
    R, C, V, lo, hi = [], [], [], [], []                  # triplets and row bounds

    def rows(cols_per_row, vals_per_row, lower, upper):
        for c, v in zip(cols_per_row, vals_per_row):
            R.append(np.full(len(c), len(lo)))
            C.append(np.asarray(c))
            V.append(np.asarray(v, float))
            lo.append(lower)
            hi.append(upper)

    by_class = [np.flatnonzero(cols["cls"] == a) for a in range(len(inst["dur"]))]
    for a, k in enumerate(by_class):                      # each recurring class once, each once-off at most once
        rows([k], [np.ones(len(k))], 1.0 if a < inst["n_rec"] else -np.inf, 1.0)
    room_use = cols["cover"].multiply(inst["rooms"][cols["cls"]]).tocsr()
    for size, cap in ((0, inst["n_small"]), (1, inst["n_large"])):
        use = room_use @ sp.diags((inst["large"][cols["cls"]] == size).astype(float))
        use = use.tocsr()
        for t in range(T):                                # room limits, where they can bind
            a, b = use.indptr[t], use.indptr[t + 1]
            if use.data[a:b].sum() > cap:
                rows([use.indices[a:b]], [use.data[a:b]], -np.inf, cap)
    for p in preds:                                       # E[p,d] - E[p,d-1] - sum_{k of p on day d-1} x_k = 0
        for d in range(1, 5 if p < inst["n_rec"] else inst["days"]):
            k = by_class[p][cols["day"][by_class[p]] == d - 1]
            prev = [e_index[p, d - 1]] if d > 1 else []
            rows([[e_index[p, d], *prev, *k]], [[1.0, *[-1.0] * len(prev), *[-1.0] * len(k)]], 0.0, 0.0)
    for a, ps in enumerate(inst["prec"]):                 # sum_{k of a on day d} x_k <= E[p, d]
        for d in np.unique(cols["day"][by_class[a]]):
            k = by_class[a][cols["day"][by_class[a]] == d]
            for p in ps:
                rows([[*k, e_index[p, d]]], [[*np.ones(len(k)), -1.0]], -np.inf, 0.0)
    kinds = np.r_[np.ones(n_x), np.zeros(n - n_x)]
    lower, upper = np.zeros(n_var), np.ones(n_var)
    if battery == "mip":
        for b in range(B):                                # C_t - C_{t-1} - 0.25 m (zc - zd) = 0, C_-1 = cap
            m, zd, ch = inst["m"][b], zc[b] + B * T, zc[b] + 2 * B * T
            for t in range(T):
                rows([[ch[t], zc[b, t], zd[t], *([ch[t - 1]] if t else [])]], [[1, -0.25 * m, 0.25 * m, -1][:3 + (t > 0)]],
                     inst["cap"][b] if t == 0 else 0.0, inst["cap"][b] if t == 0 else 0.0)
                rows([[zc[b, t], zd[t]]], [[1.0, 1.0]], -np.inf, 1.0)
            upper[ch] = inst["cap"][b]
        gain = np.r_[inst["m"] / np.sqrt(inst["eff"]), -inst["m"] * np.sqrt(inst["eff"])]
        load = cols["cover"].multiply(inst["load"][cols["cls"]] * inst["rooms"][cols["cls"]]).tocsr()
        for t in np.flatnonzero(headroom < 0):            # grid_t >= 0 where it can bind
            a, b = load.indptr[t], load.indptr[t + 1]
            rows([[*load.indices[a:b], *zc[:, t], *(zc[:, t] + B * T)]], [[*load.data[a:b], *gain]],
                 solar[t] - base[t], np.inf)
        kinds = np.r_[kinds, np.ones(2 * B * T), np.zeros(B * T)]
    A = sp.csc_matrix((np.concatenate(V), (np.concatenate(R), np.concatenate(C))), shape=(len(lo), n_var))
    e_key = np.array(list(e_index), int).reshape(-1, 2)
    return dict(inst=inst, cols=cols, base=base, solar=solar, battery=battery, n_x=n_x, zc=zc, A=A,
                e_cls=e_key[:, 0], e_day=e_key[:, 1], e_col=np.array(list(e_index.values()), int),
                row_lo=np.array(lo), row_hi=np.array(hi), col_lo=lower, col_hi=upper, integer=kinds.astype(bool),
                load=cols["cover"].multiply(inst["load"][cols["cls"]] * inst["rooms"][cols["cls"]]).tocsc())


def battery_dispatch(c, cap, m, eff):
    """Exact cheapest charge/idle/discharge sequence for one battery when it is independent of the
    rest (cost c_t per kW of grid power per slot): dynamic programming over the reachable charge
    levels cap - k * 0.25 m. Returns (cost, states); ties prefer idle."""
    K, T = int(math.floor(cap / (0.25 * m) + 1e-9)), len(c)
    V, choice = np.zeros(K + 1), np.empty((T, K + 1), np.int8)
    order = np.array([IDLE, CHARGE, DISCHARGE])
    for t in range(T - 1, -1, -1):                        # k = slots of 0.25 m below full
        opts = np.full((3, K + 1), np.inf)
        opts[0] = V
        opts[1, 1:] = c[t] * m / math.sqrt(eff) + V[:-1]  # charge: k -> k-1
        opts[2, :-1] = -c[t] * m * math.sqrt(eff) + V[1:]  # discharge: k -> k+1
        best = opts.argmin(0)
        choice[t], V = order[best], opts[best, np.arange(K + 1)]
    states, k = np.empty(T, np.int8), 0
    for t in range(T):
        states[t] = choice[t, k]
        k -= 1 - states[t]                                # charge -> k-1, idle -> k, discharge -> k+1
    return float(V[0]), states


def objective(mip, price):
    """Column costs and constant of the objective for one price series."""
    c, inst = 0.25 / 1000 * price, mip["inst"]
    cost = np.zeros(mip["A"].shape[1])
    cost[:mip["n_x"]] = mip["load"].T @ c - mip["cols"]["value"]
    offset = float(c @ (mip["base"] - mip["solar"]))
    states = None
    if mip["battery"] == "dp":
        runs = [battery_dispatch(c, *(inst[k][b] for k in ("cap", "m", "eff"))) for b in range(len(inst["cap"]))]
        offset += sum(r[0] for r in runs)
        states = np.array([r[1] for r in runs], np.int8).reshape(len(runs), len(c))
    else:
        B, T = mip["zc"].shape
        cost[mip["zc"].ravel()] = np.outer(inst["m"] / np.sqrt(inst["eff"]), c).ravel()
        cost[mip["zc"].ravel() + B * T] = -np.outer(inst["m"] * np.sqrt(inst["eff"]), c).ravel()
    return cost, offset, states


def decision_form(mip, x, states):
    """Solver column values -> (recurring_start, oneoff_start, battery_state)."""
    inst, cols, T = mip["inst"], mip["cols"], len(mip["base"])
    starts = np.full(len(inst["dur"]), T)
    on = np.flatnonzero(x[:mip["n_x"]] > 0.5)
    starts[cols["cls"][on]] = cols["start"][on]
    if states is None:
        B = mip["zc"].shape[0]
        zc, zd = x[mip["zc"]] > 0.5, x[mip["zc"] + B * T] > 0.5
        states = np.where(zc, CHARGE, np.where(zd, DISCHARGE, IDLE)).astype(np.int8)
    return starts[:inst["n_rec"]], starts[inst["n_rec"]:], states


def start_vector(mip, label):
    """A stored schedule as a full column vector (x, running sums E, batteries): every constraint but
    the objective is price-independent, so any earlier label is a feasible warm start."""
    cols, x = mip["cols"], np.zeros(mip["A"].shape[1])
    want = np.r_[label["recurring_start"], label["oneoff_start"]]
    x[:mip["n_x"]] = want[cols["cls"]] == cols["start"]
    if mip["battery"] == "mip":
        B, T = mip["zc"].shape
        st, ch = label["battery_state"], np.cumsum(0.25 * mip["inst"]["m"][:, None] * (
            (label["battery_state"] == CHARGE) * 1.0 - (label["battery_state"] == DISCHARGE)), axis=1)
        x[mip["zc"]], x[mip["zc"] + B * T] = st == CHARGE, st == DISCHARGE
        x[mip["zc"] + 2 * B * T] = mip["inst"]["cap"][:, None] + ch
    day = np.where(np.arange(len(want)) < mip["inst"]["n_rec"], want // WEEK_OPTIONS, want // DAY)
    done = want < len(mip["base"])                        # E[p, d] = [p scheduled before day d]
    x[mip["e_col"]] = done[mip["e_cls"]] & (day[mip["e_cls"]] < mip["e_day"])
    return x


def highs_model(mip, integer, threads):
    import highspy
    h, lp, A = highspy.Highs(), highspy.HighsLp(), mip["A"]
    h.setOptionValue("output_flag", False)
    h.setOptionValue("threads", threads)
    lp.num_col_, lp.num_row_ = A.shape[1], A.shape[0]
    lp.col_cost_, lp.col_lower_, lp.col_upper_ = np.zeros(A.shape[1]), mip["col_lo"], mip["col_hi"]
    lp.row_lower_, lp.row_upper_ = mip["row_lo"], mip["row_hi"]
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_, lp.a_matrix_.index_, lp.a_matrix_.value_ = A.indptr, A.indices, A.data
    if integer:
        lp.integrality_ = [highspy.HighsVarType.kInteger if i else highspy.HighsVarType.kContinuous
                           for i in mip["integer"]]
    h.passModel(lp)
    return h


def solve_highs(mip, price, gap=0.01, time_limit=600.0, threads=1, start=None, seed=0):
    """HiGHS in three steps, all on the thesis' MIP: (1) its LP relaxation (warm basis from the last
    scenario) gives a valid lower bound; (2) the MIP restricted to the columns that can pay
    (recurring classes, once-off starts whose value exceeds their energy cost, the LP's support and
    the warm start's) gives a schedule; (3) only when that is not proven within `gap` by the bound,
    the unrestricted MIP continues from it until the gap or the time limit."""
    import highspy
    t0, n = time.perf_counter(), mip["A"].shape[1]
    cost, offset, states = objective(mip, price)
    if "highs" not in mip:
        mip["highs"], mip["highs_lp"] = highs_model(mip, True, threads), highs_model(mip, False, threads)
    h, relax, idx = mip["highs"], mip["highs_lp"], np.arange(n, dtype=np.int32)
    for m in (h, relax):
        m.changeColsCost(n, idx, cost)
        m.changeObjectiveOffset(offset)
    relax.run()
    bound, x_lp = relax.getInfo().objective_function_value, np.array(relax.getSolution().col_value)
    x0 = None if start is None else start_vector(mip, start)
    pays = (mip["cols"]["cls"] < mip["inst"]["n_rec"]) | (cost[:mip["n_x"]] < 0) | (x_lp[:mip["n_x"]] > 1e-6)
    if x0 is not None:
        pays |= x0[:mip["n_x"]] > 0.5
    best = None
    for keep in (pays, np.ones(mip["n_x"], bool)):
        upper = mip["col_hi"].copy()
        upper[:mip["n_x"]] = keep
        h.changeColsBounds(n, idx, mip["col_lo"], upper)
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
                **dict(zip(("recurring_start", "oneoff_start", "battery_state"), decision_form(mip, best[1], states))))


def solve_gurobi(mip, price, gap=0.01, time_limit=600.0, threads=1, start=None, seed=0):
    """gurobipy with the same matrices; returns None (after saying so) when its licence refuses the size."""
    import gurobipy as gp
    cost, offset, states = objective(mip, price)
    with gp.Env(params=dict(OutputFlag=0)) as env, gp.Model(env=env) as g:
        x = g.addMVar(len(cost), lb=mip["col_lo"], ub=mip["col_hi"], obj=cost,
                      vtype=np.where(mip["integer"], "B", "C").tolist())
        A = mip["A"].tocsr()
        for sense, rows, rhs in (("=", mip["row_lo"] == mip["row_hi"], mip["row_lo"]),
                                 ("<", np.isinf(mip["row_lo"]), mip["row_hi"]),
                                 (">", np.isinf(mip["row_hi"]), mip["row_lo"])):
            if rows.any():
                g.addMConstr(A[rows], x, sense, rhs[rows])
        g.ObjCon = offset
        g.Params.MIPGap, g.Params.TimeLimit, g.Params.Threads, g.Params.Seed = gap, time_limit, threads, seed
        if start is not None:
            x.Start = start_vector(mip, start)
        try:
            g.optimize()
        except gp.GurobiError as e:
            print(f"gurobipy cannot solve this model ({A.shape[1]} columns, {A.shape[0]} rows): {e}; "
                  f"falling back to HiGHS", file=sys.stderr)
            return None
        return dict(solver="gurobi", status={2: "Optimal", 9: "Time limit reached"}.get(g.Status, str(g.Status)),
                    objective=g.ObjVal, bound=g.ObjBound, gap=g.MIPGap, seconds=g.Runtime,
                    **dict(zip(("recurring_start", "oneoff_start", "battery_state"), decision_form(mip, x.X, states))))


def solve(mip, price, solver="highs", **kw):
    label = solve_gurobi(mip, price, **kw) if solver == "gurobi" else None
    return label or solve_highs(mip, price, **kw)


def check_schedule(inst, base, solar, price, recurring_start, oneoff_start, battery_state):
    """Independent checker: recompute every constraint family and the cost from the decision form
    alone (no solver columns). Returns (cost, violations by family); all zero means feasible."""
    T, wd_monday = len(price), weekdays(inst)
    wd, monday = wd_monday
    bad = dict(start=0, rooms=0, precedence=0, battery=0, power=0, oneoff=0)
    rooms, load, day_of = np.zeros((2, T)), np.zeros(T), {}
    starts = np.r_[recurring_start, oneoff_start].astype(int)
    bad["oneoff"] = int(len(recurring_start) != inst["n_rec"] or len(oneoff_start) != inst["n_oneoff"])
    value = 0.0
    for a, (s, dur) in enumerate(zip(starts, inst["dur"])):
        if a < inst["n_rec"]:
            d, off = divmod(s, WEEK_OPTIONS)
            if not (0 <= d < 5 and 0 <= off and off + dur <= WEEK_OPTIONS and monday + d < inst["days"]):
                bad["start"] += 1
                continue
            runs = [(day * DAY + NINE + off) for day in range(monday + d, inst["days"], 7)]
        elif s == T:
            continue
        else:
            d, off = divmod(s, DAY)
            if not (0 <= s < T and off + dur <= DAY):
                bad["start"] += 1
                continue
            runs = [s]
            value += inst["value"][a] - inst["penalty"][a] * (not (wd[d] < 5 and off >= NINE and off + dur <= FIVE))
        day_of[a] = d
        for r in runs:
            rooms[inst["large"][a], r:r + dur] += inst["rooms"][a]
            load[r:r + dur] += inst["rooms"][a] * inst["load"][a]
    bad["rooms"] = int((rooms[0] > inst["n_small"]).sum() + (rooms[1] > inst["n_large"]).sum())
    for a, ps in enumerate(inst["prec"]):
        if a in day_of:
            bad["precedence"] += sum(p not in day_of or day_of[p] >= day_of[a] for p in ps)
    st = np.asarray(battery_state).reshape(len(inst["cap"]), T)
    bad["battery"] += int((~np.isin(st, [CHARGE, IDLE, DISCHARGE])).sum())
    zc, zd = (st == CHARGE) * 1.0, (st == DISCHARGE) * 1.0
    charge = inst["cap"][:, None] + np.cumsum(0.25 * inst["m"][:, None] * (zc - zd), axis=1)
    bad["battery"] += int(((charge < -1e-6) | (charge > inst["cap"][:, None] + 1e-6)).sum())
    grid = base - solar + load + (inst["m"] / np.sqrt(inst["eff"])) @ zc - (inst["m"] * np.sqrt(inst["eff"])) @ zd
    bad["power"] = int((grid < -1e-6).sum())
    return float(0.25 / 1000 * price @ grid - value), bad


def thesis_schedule(folder, inst):
    """The thesis' Gurobi solution (thesis_mip_results/small_i: Schedule.txt, Battery_b_Storage.txt)
    in decision form, so that check_schedule can price it under this model."""
    starts = np.full(len(inst["dur"]), DAY * inst["days"])
    for line in (Path(folder) / "Schedule.txt").read_text().splitlines():
        a, d, hhmm = int(line.split()[1][1:-1]), int(line.split()[3]) - 1, line.split()[4].split("-")[0]
        slot = 4 * int(hhmm.split(":")[0]) + int(hhmm.split(":")[1]) // 15
        starts[a] = WEEK_OPTIONS * d + slot - NINE if a < inst["n_rec"] else d * DAY + slot
    states = []
    for b, (cap, m) in enumerate(zip(inst["cap"], inst["m"])):
        soc = [float(v) for row in (Path(folder) / f"Battery_{b}_Storage.txt").read_text().splitlines()
               for v in row.split(":")[1].split()]
        step = np.round(np.diff(np.r_[cap, soc]) / (0.25 * m)).astype(int)
        states.append(np.select([step > 0, step < 0], [CHARGE, DISCHARGE], IDLE))
    return starts[:inst["n_rec"]], starts[inst["n_rec"]:], np.array(states, np.int8)


# ================================================================ label generation
LABEL_KEYS = ("recurring_start", "oneoff_start", "battery_state", "objective", "bound", "gap", "status", "solver",
              "seconds")


def save_label(path, label, price, inst, base, solar, **extra):
    """Check the schedule (zero violations, same cost) and write it atomically as one .npz."""
    cost, bad = check_schedule(inst, base, solar, price, *(label[k] for k in LABEL_KEYS[:3]))
    if any(bad.values()) or abs(cost - label["objective"]) > 1e-6 * max(1.0, abs(cost)):
        raise RuntimeError(f"{path.name}: the solver's schedule fails the checker: {bad}, cost {cost} "
                           f"vs objective {label['objective']}")
    import io
    buf = io.BytesIO()
    np.savez(buf, price=price, **{k: label[k] for k in LABEL_KEYS}, **extra)
    atomic_write_bytes(path, buf.getvalue())


def load_label(path):
    with np.load(path) as z:
        return {k: z[k].item() if z[k].ndim == 0 else z[k] for k in z.files}


_WORKER = {}


def _solve_scenario(job):
    """Worker: label scenario i, warm-started from the reference (model built once per process)."""
    cfg, i = job
    if "mip" not in _WORKER:
        _WORKER.update(mip=build_mip(cfg["inst"], cfg["base"], cfg["solar"], cfg["battery"]),
                       parts=stl_parts(cfg["price"]), ref=load_label(cfg["out"] / "reference.npz"))
    price, _ = price_scenario(_WORKER["parts"], cfg["block"], cfg["seed"], i)
    label = solve(_WORKER["mip"], price, start=_WORKER["ref"], **cfg["solve"])
    save_label(cfg["out"] / f"label_{i:05d}.npz", label, price, cfg["inst"], cfg["base"], cfg["solar"],
               index=i, seed=cfg["seed"], block=cfg["block"])
    return label


def generate_labels(inst, base, solar, price, out, n, seed=0, block=DAY, workers=1, shard=(0, 1), battery="auto",
                    limit=None, progress=True, **solve_kw):
    """Label scenarios 0..n-1 of `inst` (this shard's: i % shard[1] == shard[0]) into out/label_#####.npz,
    skipping those already there (resume). All are warm-started from out/reference.npz, the label of
    the real price, made first if missing, so a label does not depend on interrupts, workers or shards."""
    from tqdm import tqdm
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = dict(instance=inst["name"], seed=seed, block=block, battery=battery, **solve_kw)
    if (out / "config.json").exists() and json.loads((out / "config.json").read_text()) != config:
        raise SystemExit(f"{out} holds labels made with other settings ({out / 'config.json'}): use another --out")
    atomic_write_json(out / "config.json", config)
    cfg = dict(inst=inst, base=base, solar=solar, price=price, out=out, seed=seed, block=block, battery=battery,
               solve=solve_kw)
    if not (out / "reference.npz").exists():
        label = solve(build_mip(inst, base, solar, battery), price, **solve_kw)
        save_label(out / "reference.npz", label, price, inst, base, solar, index=-1, seed=seed, block=block)
    todo = [i for i in range(shard[0], n, shard[1]) if not (out / f"label_{i:05d}.npz").exists()][:limit]
    pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 1 else None
    results = (pool.imap_unordered if pool else map)(_solve_scenario, [(cfg, i) for i in todo])
    with tqdm(results, total=len(todo), disable=not progress, desc=f"labels {inst['name']}", unit="label") as bar:
        for label in bar:
            bar.set_postfix(s=f"{label['seconds']:.1f}", gap=f"{label['gap']:.4f}")
    if pool:
        pool.close()
        pool.join()
    return summarise(out)


def summarise(out):
    recs = [load_label(p) for p in sorted(Path(out).glob("label_*.npz"))]
    if not recs:
        return {}
    secs, gaps = np.array([r["seconds"] for r in recs]), np.array([r["gap"] for r in recs])
    summary = dict(labels=len(recs), seconds_mean=secs.mean(), seconds_median=float(np.median(secs)),
                   seconds_max=secs.max(), gap_mean=gaps.mean(), gap_max=gaps.max(),
                   status={s: sum(r["status"] == s for r in recs) for s in {r["status"] for r in recs}},
                   solver=sorted({r["solver"] for r in recs}))
    atomic_write_json(Path(out) / "summary.json", summary)
    return summary


# ================================================================ command line
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter,
                                epilog="examples:\n"
                                "  python csp_ldf.py --mode labels --instances 1000 --workers 2\n"
                                "  python csp_ldf.py --mode labels --instances 10000 --shard 3/16   # job 3 of 16\n"
                                "  python csp_ldf.py --mode validate      # small_0 against the thesis' 16530.94\n"
                                "  python csp_ldf.py --mode figure2       # price scenarios over the real series")
    p.add_argument("--mode", choices=["train", "labels", "validate", "figure2"], default="train",
                   help="train: the networks (default; a later issue); labels: solver-labelled scenarios;\n"
                        "validate: the MIP on small_0 against the thesis; figure2: plot price scenarios")
    d = p.add_argument_group("data (thesis 4.1-4.2)")
    d.add_argument("--data-dir", help="challenge data (default: $CSP_DATA_DIR, data/ieee_cis, ../shared/data/ieee_cis)")
    d.add_argument("--instance", default="phase2_instance_small_0", help="instance file name without .txt")
    d.add_argument("--loads", choices=["forecast", "actual"], default="forecast",
                   help="base load and solar: the thesis' forecast (default, as the thesis and its\n"
                        "results) or the actual November 2020 values")
    d.add_argument("--block", type=positive_int, default=DAY, help="residual block length in slots (default 96 = a day)")
    d.add_argument("--seed", type=int, default=0, help="scenario seed (scenario i uses (seed, i))")
    d.add_argument("--figure", default="data/figure2.png", help="where --mode figure2 writes")
    s = p.add_argument_group("labels (thesis 4.1 MIP)")
    s.add_argument("--instances", type=positive_int, default=1000, help="scenarios to label (default 1000)")
    s.add_argument("--workers", type=positive_int, default=2, help="solver processes (default 2)")
    s.add_argument("--shard", default="0/1", help="k/n: label only scenarios i with i %% n == k (job arrays)")
    s.add_argument("--out", default="data/csp_labels", help="label folder (default data/csp_labels)")
    s.add_argument("--solver", choices=["highs", "gurobi"], default="highs",
                   help="gurobi falls back to HiGHS when its licence refuses the model size")
    s.add_argument("--gap", type=nonnegative_float, default=0.01, help="relative MIP gap (default 0.01, as the thesis)")
    s.add_argument("--time-limit", type=positive_float, default=300.0, help="seconds per label (default 300)")
    s.add_argument("--threads", type=positive_int, default=1, help="solver threads per worker (default 1)")
    s.add_argument("--battery", choices=["auto", "dp", "mip"], default="auto",
                   help="batteries by exact dynamic programming when separable (auto) or in the MIP")
    args = p.parse_args(argv)
    try:
        args.shard = tuple(int(x) for x in args.shard.split("/"))
        assert len(args.shard) == 2 and 0 <= args.shard[0] < args.shard[1]
    except (ValueError, AssertionError):
        p.error(f"--shard: expected k/n with 0 <= k < n, got {args.shard!r}")
    return args


def main(argv=None):
    args = parse_args(argv)
    set_seed(args.seed)
    if args.mode == "train":
        raise SystemExit("training the CSP networks is not implemented yet; see --mode labels/validate/figure2")
    data = find_data_dir(args.data_dir)
    inst = read_instance(data / "instances" / f"{args.instance}.txt")
    base, solar = read_loads(data, args.loads)
    price = read_price(data)
    solve_kw = dict(solver=args.solver, gap=args.gap, time_limit=args.time_limit, threads=args.threads)
    if args.mode == "figure2":
        plot_figure2(price, stl_parts(price), args.figure, block=args.block, seed=args.seed)
    elif args.mode == "validate":
        mip = build_mip(inst, base, solar, args.battery)
        label = solve(mip, price, **solve_kw)
        cost, bad = check_schedule(inst, base, solar, price, *(label[k] for k in LABEL_KEYS[:3]))
        print(f"{inst['name']}, real November prices, {args.loads} loads: {mip['A'].shape[1]} columns, "
              f"{mip['A'].shape[0]} rows, batteries by {mip['battery']}")
        print(f"  this MIP ({label['solver']}, {args.threads} thread(s)): {label['objective']:.2f}, bound "
              f"{label['bound']:.2f}, gap {100 * label['gap']:.2f}%, {label['seconds']:.1f} s; checker {cost:.2f} {bad}")
        folder = data / "thesis_mip_results" / inst["name"].replace("phase2_instance_", "")
        if inst["name"] == "phase2_instance_small_0" and args.loads == "forecast":
            print(f"  thesis (Gurobi, 12 threads, gap 0.88%): {THESIS_SMALL0:.2f}; difference "
                  f"{100 * (label['objective'] / THESIS_SMALL0 - 1):+.2f}% (must be within 1%)")
        if folder.is_dir():
            t_cost, t_bad = check_schedule(inst, base, solar, price, *thesis_schedule(folder, inst))
            print(f"  the thesis' schedule priced by this checker: {t_cost:.2f} {t_bad}")
    else:
        out = Path(args.out) / f"{inst['name']}-{args.loads}-block{args.block}-seed{args.seed}"
        summary = generate_labels(inst, base, solar, price, out, args.instances, args.seed, args.block, args.workers,
                                  args.shard, args.battery, **solve_kw)
        print(json.dumps(summary, default=float))


if __name__ == "__main__":
    main()
