#!/usr/bin/env python3
"""Class scheduling (CSP) with the Lagrangian dual framework: thesis chapter 4 (Keegan 2023).

The file follows the thesis, each section using only what is defined above it:
- 4.1 instances and time series: the challenge's instance files, the VIC1 prices, the loads;
- 4.1 the MIP: its matrices, the exact battery dispatch, HiGHS (or Gurobi), the checker;
- 4.2 price scenarios: STL of the real series, residual blocks resampled (Figure 2);
- labels: label files and folders, the dataset kept in the repository, making labels (Dask);
- 4.3 model: the networks' data and splits, the conv + mixer + 72 heads network;
- 4.3 loss: cross-entropy and the battery violation through the one-hot surrogate (eq. 16-18);
- measures (Tables 7-9), through the checker;
- 4.3 train: FC and LDF through common.train_ldf;
- 4.4 schedules without learning (greedy, min-cut once-offs) and the local improvement (also a
  C++ op, csrc/csp_improve.h, that makes the same moves);
- 4.4 evaluate: decodes (raw, repaired, redispatched, improved), Tables 7-10;
- labels from a network's start (--start-from): the MIP warm-started from a trained network's
  improved schedule, so that a model speeds up the making of its own next labels;
- the command line and main.

Time: 2880 slots of 15 min, November 2020 AEDT; slot t is day t // 96 (day 0 = Sunday 1 November)
at time of day t % 96 (9:00 = slot 36 of the day).

Decisions, as the labels and the networks write them:
- recurring_start[a] = option 32 * weekday + offset: weekday 0..4 of the first week with a Monday,
  offset = slots after 9:00; the class ends by 17:00 and repeats every week;
- oneoff_start[a] = slot 0..2879, or 2880 = unscheduled;
- battery_state[b, t] = 0 charge / 1 idle / 2 discharge.

Cost: sum over slots of 0.25 h / 1000 x price ($/MWh) x grid power (kW), minus the values of the
scheduled one-off classes; grid >= 0. A battery starts full and moves 0.25 h x m_b kWh a slot (the
thesis dropped the 0.25).
"""

import argparse
import copy
import datetime
import gzip
import hashlib
import io
import json
import math
import os
import sys
import threading
import time
from pathlib import Path

# Threads that wait for each other spin by default; beside another busy process that made training
# several times slower on 2 cores (bench/knapsack_threads.py). Set before torch loads OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from scipy.sparse.csgraph import breadth_first_order, maximum_flow  # noqa: E402

import common  # noqa: E402
from common import (  # noqa: E402
    atomic_write_bytes,
    atomic_write_json,
    nonnegative_float,
    nonnegative_int,
    positive_float,
    positive_int,
    set_seed,
)
from csrc import csp as csp_op  # noqa: E402

# ---- time
DAY = 96  # slots per day
WEEK_DAYS = 7
NINE = 36  # 9:00 as a slot of the day
FIVE = 68  # 17:00 as a slot of the day
WORKDAYS = 5  # Monday..Friday: recurring classes run on weekdays 0..4
WEEK_OPTIONS = 32  # recurring offsets 9:00..16:45: option = WEEK_OPTIONS * weekday + offset
SLOT = datetime.timedelta(minutes=15)
SLOT_HOURS = 0.25
NOVEMBER_DAYS = 30
NOVEMBER = dict(days=NOVEMBER_DAYS, first_weekday=datetime.date(2020, 11, 1).weekday())  # Sunday
NOVEMBER_START_UTC = datetime.datetime(2020, 10, 31, 13)  # 1 November 2020 00:00 AEDT (UTC+11)
AEDT_SHIFT = 44  # 11 hours in slots: the thesis' forecasts are in UTC

# ---- money: price ($/MWh) x SLOT_MWH_PER_KW x power (kW) = $ over one slot
KWH_PER_MWH = 1000
SLOT_MWH_PER_KW = SLOT_HOURS / KWH_PER_MWH

# ---- decisions
CHARGE, IDLE, DISCHARGE = 0, 1, 2  # battery states
N_BATTERY_STATES = 3
DECISION_KEYS = ("recurring_start", "oneoff_start", "battery_state")

THESIS_SMALL0 = 16530.94  # thesis_mip_results/small_0/Info.txt, Gurobi, 1% gap


# ================================================================ 4.1 instances and time series
class InputError(ValueError):
    """A data file that is missing, malformed or out of range; the message names the file and the
    line (or row and column) and what was expected. main() prints it without a traceback."""


# ---- ranges of the inputs
PRICE_FLOOR = -1000.0  # $/MWh: the NEM market price floor (VIC1 November 2020: -191.13 .. 296.47)
PRICE_CAP = 15000.0  # $/MWh: the NEM market price cap of 2020-21
MAX_SERIES_KW = 1e5  # kW per building or solar series (the challenge's largest value: 8,556 kW)
MAX_BATTERY_LEVELS = 10_000  # charge levels capacity / (0.25 h x max power) of battery_dispatch
PRICE_FILE = "price/PRICE_AND_DEMAND_202011_VIC1.csv"
PRICE_HEADER = "REGION,SETTLEMENTDATE,TOTALDEMAND,RRP,PERIODTYPE"
PRICE_STAMP = "%Y/%m/%d %H:%M:%S"
HALF_HOUR = datetime.timedelta(minutes=30)
NOVEMBER_START_AEDT = datetime.datetime(2020, 11, 1)  # the price file's stamps are AEDT
FORECAST_FILE = "thesis_inputs/Forecasts-sample.csv"
ACTUAL_FILE = "energy_tsf/nov_data.tsf"  # read as nov_data.tsf.gz where only that exists
DEFAULT_DATA_DIR = Path(__file__).resolve().parent / "datasets/ieee_cis"
TSF_STAMP = "%Y-%m-%d %H-%M-%S"
SERIES_KINDS = ("Building", "Solar")  # base load: the Building* series; solar: the Solar* ones


def find_data_dir(arg=None):
    """--data-dir, else $CSP_DATA_DIR, else datasets/ieee_cis/ beside this file (the challenge
    files, committed with their sources in its README.md). A folder named by --data-dir or
    $CSP_DATA_DIR must hold instances/: it is never replaced by another one."""
    named = [("--data-dir", arg), ("$CSP_DATA_DIR", os.environ.get("CSP_DATA_DIR"))]
    for source, folder in named:
        if folder:
            if not (Path(folder) / "instances").is_dir():
                raise SystemExit(
                    f"{source} {folder}: no instances/ folder there; expected the IEEE-CIS 3rd "
                    "Technical Challenge data (instances/, price/, thesis_inputs/, energy_tsf/)"
                )
            return Path(folder)
    if (DEFAULT_DATA_DIR / "instances").is_dir():
        return DEFAULT_DATA_DIR
    raise SystemExit(
        f"CSP data not found: {DEFAULT_DATA_DIR} has no instances/ folder (it is part of the "
        "repository: restore it with git checkout datasets/ieee_cis, or name a copy of the "
        "challenge data with --data-dir or $CSP_DATA_DIR)"
    )


def read_lines(path, what):
    """The lines of a text file (gzip-compressed where its name ends in .gz); InputError naming
    the file when it is missing or not text."""
    try:
        if str(path).endswith(".gz"):
            return gzip.decompress(Path(path).read_bytes()).decode().splitlines()
        return Path(path).read_text().splitlines()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file ({what})") from None
    except (OSError, EOFError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: cannot read {what} ({err})") from None


def data_file(data_dir, name):
    """data_dir/name, or its compressed copy data_dir/name.gz where only that exists."""
    path = Path(data_dir) / name
    compressed = path.with_name(path.name + ".gz")
    return compressed if not path.exists() and compressed.exists() else path


# Per line tag: the types of the fields after the tag ('i' int, 'f' float, 'S' room size S|L;
# a final '*': that many predecessor ids follow) and what the line must look like.
LINE_FORMAT = {
    "ppoi": ("iiiii", "ppoi <#buildings> <#solar> <#batteries> <#recurring> <#once-off>"),
    "b": ("iii", "b <building id> <#small rooms> <#large rooms>"),
    "s": ("ii", "s <solar id> <building id>"),
    "c": (
        "iifff",
        "c <battery id> <building id> <capacity kWh> <max power kW> <efficiency in (0,1]>",
    ),
    "r": (
        "iiSfii*",
        "r <id> <#rooms> <S|L> <load kW> <duration 1..32> <#predecessors> <predecessor ids>",
    ),
    "a": (
        "iiSfiffi*",
        "a <id> <#rooms> <S|L> <load kW> <duration 1..96> <value> <penalty> <#predecessors> <ids>",
    ),
}
UNKNOWN_LINE = "a line starting with ppoi, b, s, c, r or a"
HEADER_FIELDS = ("buildings", "solar", "batteries", "recurring", "oneoff")
HEADER_LINES = dict(buildings="b", solar="s", batteries="c", recurring="r", oneoff="a")
CLASS_FIELDS = ("oneoff", "rooms", "large", "load", "dur", "value", "penalty")


class _BrokenLine(ValueError):
    """A line of an instance file that read_instance reports with its expected form."""


def _require(condition, why=None):
    """A broken line: read_instance reports it with the line's expected form and `why`."""
    if not condition:
        raise _BrokenLine(why)


def _parse_field(kind, text):
    if kind == "i":
        return int(text)
    if kind == "f":
        value = float(text)
        _require(math.isfinite(value), f"{text} is not a finite number")
        return value
    return "SL".index(text)  # room size: 0 small, 1 large


def read_instance(path):
    """Parse a `ppoi` file (classes: the recurring ones, then the once-off ones). Every number is
    checked (finite, in range, known building, battery and class ids, counts as the header says);
    an InputError names the file, the line and the form it expected."""
    path = Path(path)
    header = None
    rooms = np.zeros(2, int)  # small and large rooms over all buildings
    buildings = set()
    solar_ids = set()
    batteries = {}  # battery id -> (capacity, max power, efficiency)
    classes = []
    where = {}  # class index -> its line number
    building_refs = []  # (line number, form, building id) of the s and c lines
    lines = read_lines(path, "an instance file")

    def broken(line_no, why, form=None):
        form = form or LINE_FORMAT.get(lines[line_no - 1].split()[0], (None, UNKNOWN_LINE))[1]
        text = lines[line_no - 1].strip()
        reason = f" ({why})" if why else ""
        return InputError(f"{path}:{line_no}: expected '{form}', got {text!r}{reason}")

    for line_no, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            continue
        tag = fields[0]
        types, form = LINE_FORMAT.get(tag, (None, UNKNOWN_LINE))
        try:
            _require(types is not None)
            _require(header is not None or tag == "ppoi", "the 'ppoi' header must come first")
            _require(header is None or tag != "ppoi", "a second 'ppoi' header")
            n_fixed = len(types.rstrip("*"))
            _require(len(fields) > n_fixed, "too few fields")
            kinds_and_texts = zip(types[:n_fixed], fields[1 : 1 + n_fixed], strict=True)
            values = [_parse_field(kind, text) for kind, text in kinds_and_texts]
            predecessors = [int(x) for x in fields[1 + n_fixed :]]
            n_predecessors = values[-1] if types.endswith("*") else 0
            _require(len(predecessors) == n_predecessors, "not as many predecessor ids as said")
            if tag == "ppoi":
                _require(min(values) >= 0, "counts must be >= 0")
                header = dict(zip(HEADER_FIELDS, values, strict=True))
            elif tag == "b":
                building, small, large = values
                _require(building >= 0 and building not in buildings, "a new building id >= 0")
                _require(small >= 0 and large >= 0, "room counts must be >= 0")
                buildings.add(building)
                rooms += (small, large)
            elif tag == "s":
                solar_id, building = values
                _require(solar_id >= 0 and solar_id not in solar_ids, "a new solar id >= 0")
                solar_ids.add(solar_id)
                building_refs.append((line_no, form, building))
            elif tag == "c":
                battery, building, capacity, power, efficiency = values
                in_range = 0 <= battery < header["batteries"] and battery not in batteries
                _require(in_range, f"a new battery id in 0..{header['batteries'] - 1}")
                _require(capacity > 0 and power > 0, "capacity and max power must be > 0")
                _require(0 < efficiency <= 1, "efficiency must be in (0, 1]")
                levels = capacity / (SLOT_HOURS * power)
                _require(
                    levels <= MAX_BATTERY_LEVELS,
                    f"capacity / (0.25 h x max power) = "
                    f"{levels:.4g} charge levels, at most {MAX_BATTERY_LEVELS}",
                )
                batteries[battery] = (capacity, power, efficiency)
                building_refs.append((line_no, form, building))
            elif tag in ("r", "a"):
                recurring = tag == "r"
                class_id, n_rooms, large, load, duration = values[:5]
                n_rec = header["recurring"]
                if recurring:
                    _require(class_id == len(classes), f"recurring ids 0..{n_rec - 1} in order")
                    _require(1 <= duration <= WEEK_OPTIONS, "duration out of range")
                    n_of_kind = n_rec
                    first_id = 0
                else:
                    expected_id = len(classes) - n_rec
                    _require(len(classes) >= n_rec, "the once-off classes follow the recurring")
                    _require(class_id == expected_id, "once-off ids 0, 1, ... in order")
                    _require(1 <= duration <= DAY, "duration out of range")
                    n_of_kind = header["oneoff"]
                    first_id = n_rec  # one-off ids count from 0 among themselves
                    value, penalty = values[5:7]
                    _require(value >= 0 and penalty >= 0, "value and penalty must be >= 0")
                _require(n_rooms > 0, "#rooms must be > 0")
                _require(load >= 0, "the load must be >= 0 kW")
                known = all(0 <= p < n_of_kind and p != class_id for p in predecessors)
                _require(known, f"predecessor ids in 0..{n_of_kind - 1}, not the class itself")
                where[first_id + class_id] = line_no
                classes.append(
                    dict(
                        oneoff=not recurring,
                        rooms=n_rooms,
                        large=large,
                        load=load,
                        dur=duration,
                        value=0.0 if recurring else values[5],
                        penalty=0.0 if recurring else values[6],
                        prec=[first_id + p for p in predecessors],
                    )
                )
        except (_BrokenLine, ValueError, IndexError) as err:
            why = err.args[0] if isinstance(err, _BrokenLine) else None
            raise broken(line_no, why, form) from None
    if header is None:
        raise InputError(f"{path}: no 'ppoi ...' header line")
    counts = dict(
        buildings=len(buildings),
        solar=len(solar_ids),
        batteries=len(batteries),
        recurring=sum(not c["oneoff"] for c in classes),
        oneoff=sum(c["oneoff"] for c in classes),
    )
    if counts != header:
        said = " ".join(str(header[key]) for key in HEADER_FIELDS)
        differ = [
            f"{header[key]} {key} but {counts[key]} '{HEADER_LINES[key]}' lines"
            for key in HEADER_FIELDS
            if counts[key] != header[key]
        ]
        raise InputError(f"{path}: header 'ppoi {said}' says {'; '.join(differ)}")
    for line_no, form, building in building_refs:
        if building not in buildings:
            raise broken(line_no, f"building {building} has no 'b' line", form)
    n_rooms_of_size = (rooms[0], rooms[1])
    for a, c in enumerate(classes):
        if c["rooms"] > n_rooms_of_size[c["large"]]:
            size = "large" if c["large"] else "small"
            why = (
                f"needs {c['rooms']} {size} rooms, the buildings have {n_rooms_of_size[c['large']]}"
            )
            raise broken(where[a], why)
    arrays = {key: np.array([c[key] for c in classes]) for key in CLASS_FIELDS}
    if batteries:
        ordered = [batteries[b] for b in sorted(batteries)]
        cap, m, eff = (np.array(column, float) for column in zip(*ordered, strict=True))
    else:
        cap, m, eff = np.zeros(0), np.zeros(0), np.zeros(0)
    return dict(
        arrays,
        name=path.stem,
        n_rec=header["recurring"],
        n_oneoff=header["oneoff"],
        prec=[c["prec"] for c in classes],
        n_small=int(rooms[0]),
        n_large=int(rooms[1]),
        cap=cap,
        m=m,
        eff=eff,
        **NOVEMBER,
    )


def read_price(data_dir):
    """VIC1 RRP ($/MWh) of November 2020; each 30-min row (stamped at its end) covers two slots.
    Every row is checked: its time stamp in sequence, its price a number in the market's range
    [PRICE_FLOOR, PRICE_CAP]; an InputError names the file, the line and the column."""
    path = Path(data_dir) / PRICE_FILE
    lines = read_lines(path, "the AEMO VIC1 prices of November 2020")
    n_rows = NOVEMBER_DAYS * DAY // 2
    rows = [(line_no, line) for line_no, line in enumerate(lines, 1) if line.strip()]
    if not rows or rows[0][1].strip() != PRICE_HEADER:
        raise InputError(f"{path}:1: expected the header {PRICE_HEADER!r}")
    rows = rows[1:]
    if len(rows) != n_rows:
        raise InputError(f"{path}: {len(rows)} price rows, expected {n_rows} (November 2020)")
    columns = PRICE_HEADER.split(",")
    stamp_column = columns.index("SETTLEMENTDATE")
    price_column = columns.index("RRP")
    half_hourly = np.empty(n_rows)
    for k, (line_no, line) in enumerate(rows):
        fields = line.strip().split(",")
        stamp = (NOVEMBER_START_AEDT + (k + 1) * HALF_HOUR).strftime(PRICE_STAMP)
        if len(fields) != len(columns) or fields[stamp_column] != stamp:
            raise InputError(
                f"{path}:{line_no}: expected {len(columns)} columns ({PRICE_HEADER}) "
                f"with SETTLEMENTDATE {stamp}, got {line.strip()!r}"
            )
        text = fields[price_column]
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not PRICE_FLOOR <= value <= PRICE_CAP:  # (also false for NaN)
            raise InputError(
                f"{path}:{line_no}: column RRP is {text!r}; expected a price in $/MWh within the "
                f"NEM's market price floor and cap [{PRICE_FLOOR:g}, {PRICE_CAP:g}]"
            )
        half_hourly[k] = value
    return np.repeat(half_hourly, 2)


def _series_values(texts, path, line_no, name, first_column, missing=None, place="column"):
    """Numbers of one load series in kW, each finite and within [0, MAX_SERIES_KW] (`missing`:
    the text of a missing value, NaN in the result); else an InputError naming the file, line,
    series and column."""
    values = np.full(len(texts), np.nan)
    for j, text in enumerate(texts):
        if text == missing:
            continue
        try:
            values[j] = float(text)
        except ValueError:
            values[j] = math.nan
        if not 0 <= values[j] <= MAX_SERIES_KW:  # (also false for NaN)
            raise InputError(
                f"{path}:{line_no}: {name}, {place} {first_column + j}: {text!r}; expected a "
                f"finite load in kW within [0, {MAX_SERIES_KW:g}]"
            )
    return values


def _new_series(name, line_of, path, line_no):
    """Record series `name` at `line_no`; an InputError if it is no Building* or Solar* series or
    appeared before."""
    if not name.startswith(SERIES_KINDS):
        raise InputError(f"{path}:{line_no}: series {name!r}: expected Building* or Solar*")
    if name in line_of:
        raise InputError(f"{path}:{line_no}: series {name!r} again (line {line_of[name]})")
    line_of[name] = line_no


def _forecast_series(data_dir):
    """The thesis' Forecasts-sample.csv (UTC) shifted 11 h to AEDT as the thesis does (drop the
    last 44 values, put values 52..95 first)."""
    path = Path(data_dir) / FORECAST_FILE
    series = {}
    line_of = {}
    n_slots = NOVEMBER_DAYS * DAY
    for line_no, line in enumerate(read_lines(path, "the thesis' load forecasts"), 1):
        if not line.strip():
            continue
        name, *texts = line.strip().split(",")
        _new_series(name, line_of, path, line_no)
        if len(texts) != n_slots:
            raise InputError(
                f"{path}:{line_no}: {name} has {len(texts)} values, expected {n_slots} "
                "(November 2020, 15-minute slots)"
            )
        values = _series_values(texts, path, line_no, name, first_column=2)
        series[name] = np.concatenate([values[DAY - AEDT_SHIFT : DAY], values[:-AEDT_SHIFT]])
    return path, series, line_of


def _actual_series(data_dir):
    """The real November values of nov_data.tsf from 2020-10-31 13:00 UTC, a missing '?' filled
    by its time-of-day mean."""
    path = data_file(data_dir, ACTUAL_FILE)
    series = {}
    line_of = {}
    n_slots = NOVEMBER_DAYS * DAY
    for line_no, line in enumerate(read_lines(path, "the real loads (tsf)"), 1):
        if not line.strip() or line[0] in "#@":  # blank, comment or attribute line
            continue
        try:
            name, stamp, values = line.strip().split(":", 2)
            series_start = datetime.datetime.strptime(stamp, TSF_STAMP)
        except ValueError:
            raise InputError(
                f"{path}:{line_no}: expected 'name:YYYY-MM-DD HH-MM-SS:v1,v2,...'"
            ) from None
        _new_series(name, line_of, path, line_no)
        texts = values.split(",")
        first = (NOVEMBER_START_UTC - series_start) // SLOT
        if first < 0 or first + n_slots > len(texts):
            raise InputError(
                f"{path}:{line_no}: {name} does not cover November 2020 "
                f"({len(texts)} values from {series_start} UTC)"
            )
        november = texts[first : first + n_slots]
        v = _series_values(november, path, line_no, name, first + 1, missing="?", place="value")
        v = v.reshape(NOVEMBER_DAYS, DAY)
        missing = np.isnan(v)
        if missing.all():
            raise InputError(f"{path}:{line_no}: {name} has no November 2020 value")
        # the mean at each time of day; the series' mean for a time of day never seen
        never_seen = missing.all(0)
        time_of_day_mean = np.nanmean(np.where(never_seen, np.nanmean(v), v), 0)
        series[name] = np.where(missing, time_of_day_mean, v).reshape(-1)
    return path, series, line_of


def read_loads(data_dir, which="forecast"):
    """(base load, solar) kW per slot: the sums of the Building* and of the Solar* series.

    forecast: the thesis' Forecasts-sample.csv (UTC), shifted 11 h to AEDT as the thesis does
    (drop the last 44 values, put values 52..95 first); actual: the real November values of
    nov_data.tsf from 2020-10-31 13:00 UTC, a missing '?' filled by its time-of-day mean. Each
    value is checked (a finite number of kW in range); so are the series' names (Building* or
    Solar*, each once)."""
    if which == "forecast":
        path, series, _ = _forecast_series(data_dir)
    elif which == "actual":
        path, series, _ = _actual_series(data_dir)
    else:
        raise ValueError(f"loads: expected 'forecast' or 'actual', got {which!r}")
    sums = []
    for kind in SERIES_KINDS:
        of_kind = [values for name, values in series.items() if name.startswith(kind)]
        if not of_kind:
            raise InputError(f"{path}: no {kind}* series")
        sums.append(sum(of_kind))
    base, solar = sums
    return base, solar


# ================================================================ 4.1 the MIP
def weekdays(inst):
    """The weekday (0 = Monday) of each day, and the first Monday."""
    weekday = (inst["first_weekday"] + np.arange(inst["days"])) % WEEK_DAYS
    first_monday = int(np.argmax(weekday == 0))
    return weekday, first_monday


def day_windows(inst):
    """Earliest and latest day of each class from the precedence graph: a weekday 0..4 for a
    recurring class, a day of the month for a once-off one."""
    n = len(inst["dur"])
    n_rec = inst["n_rec"]
    lo = np.zeros(n, int)
    hi = np.where(np.arange(n) < n_rec, WORKDAYS - 1, inst["days"] - 1)
    for _ in range(n + 1):
        old_lo = lo.copy()
        old_hi = hi.copy()
        for a, predecessors in enumerate(inst["prec"]):
            for p in predecessors:
                lo[a] = max(lo[a], lo[p] + 1)
                if a < n_rec:  # recurring classes must run, so their predecessors must be earlier
                    hi[p] = min(hi[p], hi[a] - 1)
        if (old_lo == lo).all() and (old_hi == hi).all():
            return lo, hi
    raise InputError(f"{inst['name']}: the precedences contain a cycle")


def start_columns(inst):
    """One binary column per (class, allowed start): its class `cls`, `start` (in decision form),
    `day`, `value` (of a once-off class, less its penalty outside business hours) and `cover`
    (slot x column: 1 where the column's class is running)."""
    weekday, first_monday = weekdays(inst)
    lo, hi = day_windows(inst)
    blocks = []  # blocks of columns of one class (and of one weekday, for recurring classes)
    slots = []  # per column, the slots its class runs in
    for a, dur in enumerate(inst["dur"]):
        if a < inst["n_rec"]:
            offsets = np.arange(WEEK_OPTIONS - dur + 1)
            for d in range(lo[a], hi[a] + 1):
                days_run = np.arange(first_monday + d, inst["days"], WEEK_DAYS)
                if len(days_run) == 0:
                    continue
                blocks.append(dict(start=WEEK_OPTIONS * d + offsets, day=d, value=0.0, cls=a))
                for offset in offsets:
                    run_slots = days_run[:, None] * DAY + NINE + offset + np.arange(dur)
                    slots.append(run_slots.ravel())
        else:
            day, slot = np.divmod(np.arange(lo[a] * DAY, inst["days"] * DAY), DAY)
            ends_by_midnight = slot + dur <= DAY
            day = day[ends_by_midnight]
            slot = slot[ends_by_midnight]
            business = (weekday[day] < WORKDAYS) & (slot >= NINE) & (slot + dur <= FIVE)
            value = inst["value"][a] - inst["penalty"][a] * ~business
            blocks.append(dict(start=day * DAY + slot, day=day, value=value, cls=a))
            slots += list(blocks[-1]["start"][:, None] + np.arange(dur))

    def per_column(key):  # a block's value broadcast to each of its columns
        return np.concatenate([np.broadcast_to(b[key], b["start"].shape) for b in blocks])

    cls = per_column("cls")
    if not all(np.isin(np.arange(inst["n_rec"]), cls)):
        raise InputError(f"{inst['name']}: a recurring class has no feasible start")
    lengths = np.array([len(s) for s in slots])
    cover = sp.csc_matrix(
        (np.ones(lengths.sum()), np.concatenate(slots), np.r_[0, np.cumsum(lengths)]),
        shape=(inst["days"] * DAY, len(slots)),
    )
    return dict(
        cls=cls,
        start=per_column("start"),
        day=per_column("day"),
        value=per_column("value").astype(float),
        cover=cover,
    )


def build_mip(inst, base, solar):
    """The thesis' class MIP as sparse arrays, all but the objective (objective() prices it).

    Columns: the binary starts x (start_columns), then the running sums E[p, d] = [predecessor p
    scheduled before day d] for d >= 1. The batteries separate from the classes (battery_dispatch,
    exact) when grid >= 0 cannot bind, i.e. when base - solar covers every battery discharging at
    once: true by >= 142 kW for all 20 instances (a model that could bind is refused)."""
    cols = start_columns(inst)
    T = len(base)
    n_starts = len(cols["cls"])
    most_discharge = np.sum(inst["m"] * np.sqrt(inst["eff"]))
    if (base - solar - most_discharge < 0).any():
        raise InputError(
            f"{inst['name']}: grid >= 0 can bind here (base load - solar below "
            f"{most_discharge:.1f} kW, all batteries discharging): the batteries do not separate "
            "from the classes"
        )
    predecessors = sorted({p for ps in inst["prec"] for p in ps})
    e_keys = []  # (p, d) of each running sum, in column order
    for p in predecessors:
        last_day = WORKDAYS if p < inst["n_rec"] else inst["days"]
        e_keys += [(p, d) for d in range(1, last_day)]
    e_column = {key: n_starts + i for i, key in enumerate(e_keys)}
    n_columns = n_starts + len(e_keys)

    triplet_rows, triplet_columns, triplet_values = [], [], []
    row_lo, row_hi = [], []

    def add_row(columns, coefficients, lower, upper):
        triplet_rows.append(np.full(len(columns), len(row_lo)))
        triplet_columns.append(columns)
        triplet_values.append(np.asarray(coefficients, float))
        row_lo.append(lower)
        row_hi.append(upper)

    by_class = [np.flatnonzero(cols["cls"] == a) for a in range(len(inst["dur"]))]
    for a, k in enumerate(by_class):  # each recurring class once, each once-off class at most once
        add_row(k, np.ones(len(k)), 1.0 if a < inst["n_rec"] else -np.inf, 1.0)
    room_use = cols["cover"].multiply(inst["rooms"][cols["cls"]]).tocsr()
    for size, n_rooms in ((0, inst["n_small"]), (1, inst["n_large"])):
        of_size = (inst["large"][cols["cls"]] == size).astype(float)
        use = (room_use @ sp.diags(of_size)).tocsr()
        for t in range(T):  # room limits, where they can bind
            first, end = use.indptr[t], use.indptr[t + 1]
            if use.data[first:end].sum() > n_rooms:
                add_row(use.indices[first:end], use.data[first:end], -np.inf, n_rooms)
    for p, d in e_keys:  # E[p, d] - E[p, d-1] - sum_{k of p on day d-1} x_k = 0
        k = by_class[p][cols["day"][by_class[p]] == d - 1]
        previous = [e_column[p, d - 1]] if d > 1 else []
        columns = [e_column[p, d], *previous, *k]
        coefficients = [1.0, *[-1.0] * len(previous), *[-1.0] * len(k)]
        add_row(columns, coefficients, 0.0, 0.0)
    for a, ps in enumerate(inst["prec"]):  # sum_{k of a on day d} x_k <= E[p, d]
        for d in np.unique(cols["day"][by_class[a]]):
            k = by_class[a][cols["day"][by_class[a]] == d]
            for p in ps:
                add_row([*k, e_column[p, d]], [*np.ones(len(k)), -1.0], -np.inf, 0.0)
    A = sp.csc_matrix(
        (
            np.concatenate(triplet_values),
            (np.concatenate(triplet_rows), np.concatenate(triplet_columns)),
        ),
        shape=(len(row_lo), n_columns),
    )
    e_key_array = np.array(list(e_column), int).reshape(-1, 2)
    class_load = inst["load"][cols["cls"]] * inst["rooms"][cols["cls"]]
    return dict(
        inst=inst,
        cols=cols,
        base=base,
        solar=solar,
        n_starts=n_starts,
        A=A,
        # the running-sum columns: E[e_class, e_day] is column e_column
        e_class=e_key_array[:, 0],
        e_day=e_key_array[:, 1],
        e_column=np.array(list(e_column.values()), int),
        row_lo=np.array(row_lo),
        row_hi=np.array(row_hi),
        col_lo=np.zeros(n_columns),
        col_hi=np.ones(n_columns),
        integer=np.arange(n_columns) < n_starts,
        load=cols["cover"].multiply(class_load).tocsc(),  # kW per slot of each start column
    )


def battery_dispatch(cost, cap, m, eff):
    """Exact cheapest states of one independent battery (cost[t] $ per kW drawn in slot t):
    dynamic programming over its charge levels cap - k SLOT_HOURS m, k = 0..K -> (cost, states)."""
    step = SLOT_HOURS * m
    K = int(math.floor(cap / step + 1e-9))
    T = len(cost)
    cost_to_go = np.zeros(K + 1)  # from each level k (steps below full)
    choice = np.empty((T, K + 1), np.int8)
    option_state = np.array([IDLE, CHARGE, DISCHARGE])
    for t in range(T - 1, -1, -1):
        options = np.stack([cost_to_go, np.full(K + 1, np.inf), np.full(K + 1, np.inf)])
        options[1, 1:] = cost[t] * m / math.sqrt(eff) + cost_to_go[:-1]  # charge: k -> k-1
        options[2, :-1] = -cost[t] * m * math.sqrt(eff) + cost_to_go[1:]  # discharge: k -> k+1
        best = options.argmin(0)
        choice[t] = option_state[best]
        cost_to_go = options[best, np.arange(K + 1)]
    states = np.empty(T, np.int8)
    level = 0
    for t in range(T):  # charge -> k-1, idle -> k, discharge -> k+1
        states[t] = choice[t, level]
        level += int(states[t]) - IDLE
    return float(cost_to_go[0]), states


def battery_dispatch_batch(costs, cap, m, eff):
    """battery_dispatch for many cost series at once (scenarios x slots): the same dynamic
    programme, vectorised over the scenarios -> (costs, states)."""
    costs = np.atleast_2d(costs)
    step = SLOT_HOURS * m
    K = int(math.floor(cap / step + 1e-9))
    S, T = costs.shape
    cost_to_go = np.zeros((S, K + 1))
    choice = np.empty((T, S, K + 1), np.int8)
    option_state = np.array([IDLE, CHARGE, DISCHARGE], np.int8)
    charge_price = m / math.sqrt(eff)
    discharge_price = m * math.sqrt(eff)
    options = np.full((3, S, K + 1), np.inf)
    for t in range(T - 1, -1, -1):
        options[0] = cost_to_go
        options[1, :, 1:] = costs[:, t, None] * charge_price + cost_to_go[:, :-1]
        options[2, :, :-1] = -costs[:, t, None] * discharge_price + cost_to_go[:, 1:]
        best = options.argmin(0)
        choice[t] = option_state[best]
        cost_to_go = np.take_along_axis(options, best[None], 0)[0]
    states = np.empty((S, T), np.int8)
    level = np.zeros(S, int)
    rows = np.arange(S)
    for t in range(T):
        states[:, t] = choice[t, rows, level]
        level += states[:, t].astype(int) - IDLE
    return cost_to_go[:, 0], states


def objective(mip, price):
    """The objective for one price series -> (column costs, constant, battery states): the
    constant holds the base load less solar and the batteries' exact dispatch."""
    inst = mip["inst"]
    cost_per_kw = SLOT_MWH_PER_KW * price
    cost = np.zeros(mip["A"].shape[1])
    cost[: mip["n_starts"]] = mip["load"].T @ cost_per_kw - mip["cols"]["value"]
    dispatches = []
    for b in range(len(inst["cap"])):
        dispatches.append(
            battery_dispatch(cost_per_kw, inst["cap"][b], inst["m"][b], inst["eff"][b])
        )
    battery_cost = sum(d[0] for d in dispatches)
    offset = float(cost_per_kw @ (mip["base"] - mip["solar"])) + battery_cost
    states = np.array([d[1] for d in dispatches], np.int8).reshape(len(dispatches), len(price))
    return cost, offset, states


def decision_form(mip, x, battery_state):
    """Solver column values -> (recurring_start, oneoff_start, battery_state)."""
    inst = mip["inst"]
    cols = mip["cols"]
    chosen = np.flatnonzero(x[: mip["n_starts"]] > 0.5)
    starts = np.full(len(inst["dur"]), len(mip["base"]))  # unscheduled
    starts[cols["cls"][chosen]] = cols["start"][chosen]
    return starts[: inst["n_rec"]], starts[inst["n_rec"] :], battery_state


def start_vector(mip, label):
    """A stored schedule as a column vector: the constraints ignore the price, so any label is a
    feasible warm start."""
    cols = mip["cols"]
    x = np.zeros(mip["A"].shape[1])
    wanted = np.r_[label["recurring_start"], label["oneoff_start"]]
    x[: mip["n_starts"]] = wanted[cols["cls"]] == cols["start"]
    recurring = np.arange(len(wanted)) < mip["inst"]["n_rec"]
    day = np.where(recurring, wanted // WEEK_OPTIONS, wanted // DAY)
    scheduled = wanted < len(mip["base"])
    e_class = mip["e_class"]  # E[p, d] = [p scheduled before day d]
    x[mip["e_column"]] = scheduled[e_class] & (day[e_class] < mip["e_day"])
    return x


class SolverError(RuntimeError):
    """The solver found no schedule (time limit, or an infeasible instance); main() prints it
    without a traceback."""


MIN_SOLVE_SECONDS = 0.01  # HiGHS' time_limit must be > 0
WAIT_SECONDS = 0.05  # the main thread checks for Ctrl-C this often while HiGHS runs
STOP_GRACE_SECONDS = 0.5  # after Ctrl-C, how long to wait for HiGHS to stop before going on


def _interrupt_if_stopping(event):
    """HiGHS' simplex, IPM and MIP interrupt callback; its user data: the model's stop event."""
    if event.user_data.is_set():
        event.interrupt()


def run_highs(h, seconds):
    """h.run() within `seconds` (HiGHS' time_limit), stoppable by Ctrl-C. HiGHS runs in a thread
    (it releases the GIL) while this one waits in short slices. On Ctrl-C the model's stop event
    tells HiGHS' interrupt callbacks to stop; HiGHS checks them often in an LP but at times only
    every few seconds in a MIP, so the KeyboardInterrupt is raised again after at most
    STOP_GRACE_SECONDS, and a model that may still be running must not be used again."""
    h.setOptionValue("time_limit", max(seconds, MIN_SOLVE_SECONDS))
    h.stop_event.clear()
    done = threading.Event()

    def solve_in_thread():
        try:
            h.run()
            h.resetGlobalScheduler(False)  # as highspy's own threaded solve does
        finally:
            done.set()

    thread = threading.Thread(target=solve_in_thread, name="highs", daemon=True)
    thread.start()
    try:
        while not done.wait(WAIT_SECONDS):
            pass
    except KeyboardInterrupt:
        h.stop_event.set()
        done.wait(STOP_GRACE_SECONDS)
        raise
    thread.join()


def highs_model(mip, integer, threads):
    """The MIP (integer) or its LP relaxation as a HiGHS model, with zero costs; Ctrl-C stops
    its solves (run_highs)."""
    import highspy

    A = mip["A"]
    lp = highspy.HighsLp()
    lp.num_col_ = A.shape[1]
    lp.num_row_ = A.shape[0]
    lp.col_cost_ = np.zeros(A.shape[1])
    lp.col_lower_ = mip["col_lo"]
    lp.col_upper_ = mip["col_hi"]
    lp.row_lower_ = mip["row_lo"]
    lp.row_upper_ = mip["row_hi"]
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = A.indptr
    lp.a_matrix_.index_ = A.indices
    lp.a_matrix_.value_ = A.data
    if integer:  # HighsVarType 1 = kInteger, 0 = kContinuous
        lp.integrality_ = [highspy.HighsVarType(int(i)) for i in mip["integer"]]
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("threads", threads)
    h.passModel(lp)
    h.stop_event = threading.Event()  # set: the interrupt callbacks stop HiGHS (run_highs)
    for callbacks in (h.cbSimplexInterrupt, h.cbIpmInterrupt, h.cbMipInterrupt):
        callbacks.subscribe(_interrupt_if_stopping, h.stop_event)
    return h


# The restricted MIP (labels): the LP's support, the warm start's columns and the
# CANDIDATE_COLUMNS start columns of lowest LP reduced cost, solved to RESTRICTED_GAP of its own
# bound without HiGHS' feasibility-jump and root-reduced-cost heuristics (which found nothing here
# that its sub-MIP did not). bench/csp_labels.py times it against other candidate counts.
CANDIDATE_COLUMNS = 6000
RESTRICTED_GAP = 1e-3
# A HiGHS model re-priced for hundreds of scenarios slows down (README: seconds per label); each
# model is built anew after this many solves (building takes 0.5 s).
MODEL_REUSES = 100
FEASIBLE_SOLUTION = 2  # HiGHS' primal_solution_status kSolutionStatusFeasible


OPTIMAL_GAP = 1e-4  # a label is "optimal" only where its proven relative gap is below this


def label_status(proven, gap):
    """A label's status from its proven relative gap: "optimal" below OPTIMAL_GAP, "within_gap"
    within the requested `gap` (the thesis' 1 %), else "time limit"."""
    if proven < OPTIMAL_GAP:
        return "optimal"
    return "within_gap" if proven <= gap else "time limit"


def stored_status(status, proven):
    """The status of a label stored before the "within_gap" status: "optimal" there meant within
    the requested gap."""
    return "within_gap" if status == "optimal" and proven >= OPTIMAL_GAP else str(status)


def restricted_columns(mip, x_lp, reduced_cost, x0):
    """The start columns the first MIP may use: the LP's support, the warm start's columns and
    the CANDIDATE_COLUMNS of lowest LP reduced cost."""
    n_starts = mip["n_starts"]
    keep = x_lp[:n_starts] > 1e-6
    if x0 is not None:
        keep |= x0[:n_starts] > 0.5
    candidates = min(CANDIDATE_COLUMNS, n_starts - 1)
    threshold = np.partition(reduced_cost[:n_starts], candidates)[candidates]
    keep |= reduced_cost[:n_starts] <= threshold
    return keep


def _solve_highs(mip, price, gap, time_limit, threads, start, seed):
    """HiGHS: (1) the LP relaxation bounds; (2) the MIP on restricted columns
    (restricted_columns); (3) only if that is not within `gap` of the bound, the full MIP goes on.
    Every HiGHS run gets the time left of `time_limit` (seconds for the whole solve) and stops
    on Ctrl-C."""
    import highspy

    t0 = time.perf_counter()
    if not np.isfinite(price).all():
        raise InputError("the price series holds a value that is not finite")
    n = mip["A"].shape[1]
    n_starts = mip["n_starts"]
    cost, offset, battery_state = objective(mip, price)
    if "highs" not in mip or mip["highs_solves"] >= MODEL_REUSES:  # re-priced per scenario
        mip["highs"] = highs_model(mip, True, threads)
        mip["highs_lp"] = highs_model(mip, False, threads)
        mip["highs_solves"] = 0
    mip["highs_solves"] += 1
    h = mip["highs"]
    relaxation = mip["highs_lp"]
    all_columns = np.arange(n, dtype=np.int32)
    for model in (h, relaxation):
        model.changeColsCost(n, all_columns, cost)
        model.changeObjectiveOffset(offset)
    run_highs(relaxation, time_limit - (time.perf_counter() - t0))
    if relaxation.getModelStatus() == highspy.HighsModelStatus.kOptimal:
        bound = relaxation.getInfo().objective_function_value
        x_lp = np.array(relaxation.getSolution().col_value)
        reduced_cost = np.array(relaxation.getSolution().col_dual)
    else:  # out of time: no bound yet, the MIP gets what is left
        bound = -np.inf
        x_lp = np.zeros(n)
        reduced_cost = cost.copy()
    x0 = None if start is None else start_vector(mip, start)
    keep_restricted = restricted_columns(mip, x_lp, reduced_cost, x0)
    best_objective = None
    best_x = None
    for full in (False, True):
        keep = np.ones(n_starts, bool) if full else keep_restricted
        upper = np.r_[keep, mip["col_hi"][n_starts:]].astype(float)
        h.changeColsBounds(n, all_columns, mip["col_lo"], upper)
        left = time_limit - (time.perf_counter() - t0)
        h.setOptionValue("mip_rel_gap", gap if full else min(gap, RESTRICTED_GAP))
        h.setOptionValue("random_seed", seed)
        for heuristic in ("feasibility_jump", "root_reduced_cost"):
            h.setOptionValue(f"mip_heuristic_run_{heuristic}", full)
        if x0 is not None:
            solution = highspy.HighsSolution()
            solution.col_value = list(x0)
            solution.value_valid = True
            h.setSolution(solution)
        run_highs(h, left)
        info = h.getInfo()
        feasible = info.primal_solution_status == FEASIBLE_SOLUTION
        if feasible and (best_objective is None or info.objective_function_value < best_objective):
            best_objective = info.objective_function_value
            best_x = np.array(h.getSolution().col_value)
            x0 = best_x
        if full:  # the full MIP's bound is valid too
            bound = max(bound, info.mip_dual_bound)
        within_gap = best_x is not None and best_objective - bound <= gap * abs(best_objective)
        if within_gap or left <= 0:
            break
    if best_x is None:
        status = h.modelStatusToString(h.getModelStatus())
        if h.getModelStatus() == highspy.HighsModelStatus.kTimeLimit or left <= 0:
            raise SolverError(
                f"HiGHS found no schedule within --time-limit {time_limit:g} s ({status}): "
                "raise --time-limit"
            )
        raise SolverError(f"HiGHS found no schedule ({status})")
    proven = max(0.0, best_objective - bound) / max(abs(best_objective), 1e-9)
    recurring_start, oneoff_start, battery_state = decision_form(mip, best_x, battery_state)
    return dict(
        solver="highs",
        status=label_status(proven, gap),
        objective=best_objective,
        bound=bound,
        gap=proven,
        seconds=time.perf_counter() - t0,
        recurring_start=recurring_start,
        oneoff_start=oneoff_start,
        battery_state=battery_state,
    )


def solve_highs(mip, price, gap=0.01, time_limit=600.0, threads=1, start=None, seed=0):
    """_solve_highs; after Ctrl-C the MIP's HiGHS models are dropped (HiGHS may still be running
    them until its next interrupt check), so that a later solve builds new ones."""
    try:
        return _solve_highs(mip, price, gap, time_limit, threads, start, seed)
    except KeyboardInterrupt:
        mip.pop("highs", None)
        mip.pop("highs_lp", None)
        raise


def solve_gurobi(mip, price, gap=0.01, time_limit=600.0, threads=1, seed=0, **_):
    """gurobipy on the same matrices, no warm start; None when its licence refuses the size
    or where gurobipy is not installed (then solve() uses HiGHS)."""
    try:
        import gurobipy as gp
    except ImportError:
        print("gurobipy is not installed: HiGHS instead", file=sys.stderr)
        return None

    cost, offset, battery_state = objective(mip, price)
    lo = mip["row_lo"]
    hi = mip["row_hi"]
    sense = np.where(lo == hi, "=", np.where(np.isinf(lo), "<", ">"))
    rhs = np.where(np.isinf(lo), hi, lo)
    params = dict(OutputFlag=0, MIPGap=gap, TimeLimit=time_limit, Threads=threads, Seed=seed)
    with gp.Env(params=params) as env:
        g = gp.Model(env=env)
        vtype = np.where(mip["integer"], "B", "C")
        x = g.addMVar(len(cost), lb=mip["col_lo"], ub=mip["col_hi"], obj=cost, vtype=vtype)
        g.addMConstr(mip["A"].tocsr(), x, sense, rhs)
        g.ObjCon = offset
        try:
            g.optimize()
        except gp.GurobiError as e:
            print(f"gurobipy cannot solve this model ({e}): HiGHS instead", file=sys.stderr)
            return None
        if g.Status == gp.GRB.INTERRUPTED:  # Gurobi stops on Ctrl-C by itself
            raise KeyboardInterrupt
        if g.SolCount == 0:
            raise SolverError(
                f"Gurobi found no schedule (status {g.Status}, --time-limit {time_limit:g} s)"
            )
        recurring_start, oneoff_start, battery_state = decision_form(mip, x.X, battery_state)
        return dict(
            solver="gurobi",
            status=label_status(g.MIPGap, gap),
            objective=g.ObjVal,
            gap=g.MIPGap,
            bound=g.ObjBound,
            seconds=g.Runtime,
            recurring_start=recurring_start,
            oneoff_start=oneoff_start,
            battery_state=battery_state,
        )


def solve(mip, price, solver="highs", **kw):
    """A label: the MIP solved for one price series, in decision form."""
    label = solve_gurobi(mip, price, **kw) if solver == "gurobi" else None
    return label or solve_highs(mip, price, **kw)


def check_schedule(
    inst, base, solar, price, recurring_start, oneoff_start, battery_state, detail=None
):
    """Independent checker: every constraint family and the cost from the decision form alone
    -> (cost, violations by family). A dict `detail` receives the charge, the room use (small,
    large) and, per precedence pair, the days too late (1 if the predecessor is missing)."""
    T = len(price)
    weekday, first_monday = weekdays(inst)
    n_rec = inst["n_rec"]
    wrong_counts = len(recurring_start) != n_rec or len(oneoff_start) != inst["n_oneoff"]
    bad = dict(start=0, rooms=0, precedence=0, battery=0, power=0, oneoff=int(wrong_counts))
    value = 0.0
    rooms = np.zeros((2, T))  # small and large rooms in use
    load = np.zeros(T)
    day_of = {}
    starts = np.r_[recurring_start, oneoff_start].astype(int)
    # (strict=False: a schedule with too few once-off starts is counted in bad["oneoff"])
    for a, (s, dur) in enumerate(zip(starts, inst["dur"], strict=False)):
        recurring = a < n_rec
        if not recurring and s == T:  # an unscheduled once-off class
            continue
        if recurring:
            d, offset = divmod(s, WEEK_OPTIONS)
            valid = 0 <= d < WORKDAYS and 0 <= offset and offset + dur <= WEEK_OPTIONS
            valid = valid and first_monday + d < inst["days"]
        else:
            d, offset = divmod(s, DAY)
            valid = 0 <= s < T and offset + dur <= DAY
        if not valid:
            bad["start"] += 1
            continue
        if recurring:
            runs = [
                day * DAY + NINE + offset
                for day in range(first_monday + d, inst["days"], WEEK_DAYS)
            ]
        else:
            runs = [s]
            business = weekday[d] < WORKDAYS and offset >= NINE and offset + dur <= FIVE
            value += inst["value"][a] - inst["penalty"][a] * (not business)
        day_of[a] = d
        for r in runs:
            rooms[inst["large"][a], r : r + dur] += inst["rooms"][a]
            load[r : r + dur] += inst["rooms"][a] * inst["load"][a]
    small_over = (rooms[0] > inst["n_small"]).sum()
    large_over = (rooms[1] > inst["n_large"]).sum()
    bad["rooms"] = int(small_over + large_over)
    late = []
    for a, predecessors in enumerate(inst["prec"]):
        for p in predecessors:
            if a not in day_of:
                late.append(0)
            elif p not in day_of:
                late.append(1)
            else:
                late.append(max(0, day_of[p] + 1 - day_of[a]))
    bad["precedence"] = int(np.count_nonzero(late))
    states = np.asarray(battery_state).reshape(len(inst["cap"]), T)
    bad["battery"] += int((~np.isin(states, [CHARGE, IDLE, DISCHARGE])).sum())
    charging = (states == CHARGE) * 1.0
    discharging = (states == DISCHARGE) * 1.0
    moves = SLOT_HOURS * inst["m"][:, None] * (charging - discharging)
    charge = inst["cap"][:, None] + np.cumsum(moves, axis=1)
    out_of_bounds = (charge < -1e-6) | (charge > inst["cap"][:, None] + 1e-6)
    bad["battery"] += int(out_of_bounds.sum())
    drawn = (inst["m"] / np.sqrt(inst["eff"])) @ charging
    delivered = (inst["m"] * np.sqrt(inst["eff"])) @ discharging
    grid = base - solar + load + drawn - delivered
    bad["power"] = int((grid < -1e-6).sum())
    if detail is not None:
        detail.update(charge=charge, rooms=rooms, prec=np.array(late, float))
    return float(SLOT_MWH_PER_KW * price @ grid - value), bad


# ================================================================ 4.2 price scenarios
def stl_parts(price):
    """STL decomposition of the price, period one day -> (trend, seasonal, residual)."""
    from statsmodels.tsa.seasonal import STL

    fit = STL(price, period=DAY).fit()
    return np.asarray(fit.trend), np.asarray(fit.seasonal), np.asarray(fit.resid)


def price_scenario(parts, block, seed, index):
    """Thesis 4.2: trend + seasonal + blocks of the residual, each bootstrapped from a block that
    starts at the same time of day -> (prices, block starts). Scenario `index` of `seed`."""
    trend, seasonal, resid = parts
    rng = np.random.default_rng([seed, index])
    T = len(resid)
    noise = np.empty(T)
    starts = []
    for position in range(0, T, block):
        n = min(block, T - position)
        same_time_of_day = np.arange(position % DAY, T - n + 1, DAY)
        if len(same_time_of_day):
            start = int(rng.choice(same_time_of_day))
        else:
            start = int(rng.integers(0, T - n + 1))
        starts.append(start)
        noise[position : position + n] = resid[start : start + n]
    return trend + seasonal + noise, np.array(starts)


def figure2(price, block, seed):
    """Thesis Figure 2: three price scenarios over the real prices, to data/figure2.png."""
    import matplotlib.pyplot as plt

    parts = stl_parts(price)
    plt.figure(figsize=(12, 4))
    for i in range(3):
        scenario, _ = price_scenario(parts, block, seed, i)
        plt.plot(scenario, lw=0.6, label=f"scenario {i}")
    plt.plot(price, "k", lw=0.8, label="VIC1 RRP, Nov 2020")
    plt.xlabel("slot (15 min from 1 Nov 2020 AEDT)")
    plt.ylabel("$/MWh")
    plt.legend()
    plt.savefig("data/figure2.png", dpi=120)


# ================================================================ labels: files and folders
LABEL_KEYS = (*DECISION_KEYS, "objective", "bound", "gap", "status", "solver", "seconds")
LABEL_FILE_KEYS = ("price", *LABEL_KEYS, "index", "fixed_cost")  # what every label file holds
# what a label folder's labels follow from, besides the loads and the price series
INSTANCE_ARRAYS = ("rooms", "large", "load", "dur", "value", "penalty", "cap", "m", "eff")
INSTANCE_NUMBERS = ("n_rec", "n_oneoff", "n_small", "n_large", "days", "first_weekday")
CONFIG_KEYS = ("instance", "seed", "block", "fingerprint")  # config.json; the rest: solver settings
# A label's start where it records none: the reference label's classes (every label before
# --start-from). A label made from another start records its name ("start": NetworkStarts).
REFERENCE_START = "reference"
# how a label is solved (_solve_highs), part of every label set's fingerprint
LABEL_METHOD = (
    f"LP bound; MIP on the LP support, the warm start and the {CANDIDATE_COLUMNS} starts of lowest "
    f"reduced cost (gap {RESTRICTED_GAP}); the full MIP if not within the gap"
)


def label_fingerprint(inst, base, solar, price, seed, block, solve_kw):
    """SHA-256 of everything a label folder's labels follow from: the instance (classes, rooms,
    batteries, precedences, calendar), the base load and solar, the real price series (the
    scenarios' STL parts), the scenario seed and block, and the solver settings."""
    numbers = {key: int(inst[key]) for key in INSTANCE_NUMBERS}
    described = dict(numbers, prec=inst["prec"], seed=seed, block=block, solve=solve_kw)
    described["method"] = LABEL_METHOD
    digest = hashlib.sha256(json.dumps(described, sort_keys=True).encode())
    for array in (*(inst[key] for key in INSTANCE_ARRAYS), base, solar, price):
        digest.update(np.ascontiguousarray(array, dtype=np.float64).tobytes())
    return digest.hexdigest()


def save_label(path, label, price, inst, base, solar, **extra):
    """Check the schedule (zero violations, the same cost) and write it atomically as one .npz."""
    decisions = [label[key] for key in DECISION_KEYS]
    cost, bad = check_schedule(inst, base, solar, price, *decisions)
    if any(bad.values()) or abs(cost - label["objective"]) > 1e-6 * max(1.0, abs(cost)):
        raise RuntimeError(
            f"{path.name}: the checker finds {bad}, cost {cost} vs objective {label['objective']}"
        )
    buffer = io.BytesIO()
    np.savez(buffer, price=price, **{key: label[key] for key in LABEL_KEYS}, **extra)
    atomic_write_bytes(path, buffer.getvalue())


def load_label(path):
    """One label file as a dict; a SystemExit naming the file when it is truncated, garbage,
    empty or no label file."""
    try:
        with np.load(path) as z:
            label = {key: z[key].item() if z[key].ndim == 0 else z[key] for key in z.files}
    except Exception as err:  # (zipfile, pickle, EOF, OS and value errors of a broken file)
        raise SystemExit(
            f"{path}: corrupt label file ({type(err).__name__}: {str(err)[:120]}); delete it "
            "and run --mode labels again to re-solve it"
        ) from None
    missing = [key for key in LABEL_FILE_KEYS if key not in label]
    if missing:
        raise SystemExit(
            f"{path}: not a label file of csp_ldf.py (no {', '.join(missing)}); delete it and run "
            "--mode labels again to re-solve it"
        )
    return label


def read_labels(paths, fingerprint, folder):
    """Load label files, each carrying `fingerprint` (their folder's; None: the first label's)."""
    labels = []
    for path in paths:
        label = load_label(path)
        if "fingerprint" not in label:
            raise SystemExit(
                f"{path}: a label without the fingerprint of its inputs (made by a csp_ldf.py "
                "before fingerprints): delete it and run --mode labels again to re-solve it"
            )
        if fingerprint is None:
            fingerprint = label["fingerprint"]
        elif label["fingerprint"] != fingerprint:
            raise SystemExit(
                f"{path}: this label was made from other inputs or solver settings than the "
                f"other labels of {folder} (see its config.json): delete the file, or keep it in "
                "a label folder of its own (--labels-dir)"
            )
        labels.append(label)
    return labels


def read_label_config(folder):
    """A label folder's config.json as a dict ({} if absent)."""
    path = Path(folder) / "config.json"
    if not path.exists():
        return {}
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SystemExit(f"{path}: unreadable ({err}); delete the label folder {folder}") from None
    if not isinstance(config, dict):
        raise SystemExit(f"{path}: not a label folder's config; delete the label folder {folder}")
    return config


def _label_config(out, config):
    """Refuse a label folder made from other inputs or settings (config.json), else record them
    there."""
    path = out / "config.json"
    old = read_label_config(out)
    if old and "fingerprint" not in old:
        raise SystemExit(
            f"{path}: no fingerprint of the inputs (made by a csp_ldf.py before fingerprints): "
            "delete the folder to make its labels again, or use another --labels-dir"
        )
    differ = sorted(key for key in set(old) | set(config) if old and old.get(key) != config[key])
    if differ:
        named = [key for key in differ if key != "fingerprint"]
        what = (
            f"settings ({', '.join(named)})"
            if named
            else "inputs (the instance file, the price series or the loads)"
        )
        raise SystemExit(
            f"{out} holds labels made with other {what} ({path}): use another --labels-dir, or "
            "delete the folder to make them again"
        )
    atomic_write_json(path, config)


def label_index(path):
    """label_00042.npz -> 42."""
    try:
        return int(path.stem.removeprefix("label_"))
    except ValueError:
        raise SystemExit(f"{path}: not a label file name (label_<index>.npz): move it") from None


# ---------------------------------------------------------------- the label dataset
# Labels kept in the repository: per label set, a folder datasets/csp/<name> (the name of its
# label folder) with manifest.json, reference.npz, stl.npz and shard_#####.npz, each shard the
# scenarios [SHARD_SCENARIOS k, SHARD_SCENARIOS (k + 1)) compressed. Price scenarios are not
# stored: they are rebuilt by numpy indexing from the real series' STL parts (stl.npz, stored once
# so that no statsmodels version changes them) and the seed, and checked against each label's hash.
# The manifest records where the labels come from: the code commit, the library versions, the raw
# data files' SHA-256 and the date, for the dataset (created) and for each shard (made).
DATASET_FOLDER = "datasets/csp"
SHARD_SCENARIOS = 250
SHARD_MAX_BYTES = 2 * 1024 * 1024
PRICE_HASH_DECIMALS = 4  # the rebuilt series is hashed to 1e-4 $/MWh
MANIFEST_FORMAT = 2  # 2: stl.npz, provenance, "within_gap"; 1 loads too (--mode upgrade-dataset)
STL_FILE = "stl.npz"
STL_KEYS = ("trend", "seasonal", "residual")
STL_TOLERANCE = 1e-6  # $/MWh: the stored parts must add up to the real price series
LIBRARIES = ("numpy", "scipy", "statsmodels", "highspy", "torch")
SHARD_ARRAYS = dict(index=np.int32, recurring_start=np.int16, oneoff_start=np.int16)
SHARD_ARRAYS["battery_state"] = np.int8
DOLLAR_DECIMALS = 4  # the manifest's numbers, rounded so that 10,000 labels stay near 1 MB
RATIO_DIGITS = 6
SECONDS_DECIMALS = 2
MANIFEST_LABEL_KEYS = (
    "index",
    "objective",
    "bound",
    "gap",
    "gap_controllable",
    "fixed_cost",
    "seconds",
    "status",
    "price_hash",
)


def code_commit():
    """The git commit of this checkout ("+dirty" with uncommitted changes to tracked files), or
    "unknown" outside a git checkout."""
    import subprocess

    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True
        )
        changed = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
        )
    except OSError:
        return "unknown"
    if commit.returncode != 0:
        return "unknown"
    return commit.stdout.strip() + ("+dirty" if changed.stdout.strip() else "")


def provenance():
    """Where new labels come from: the date (UTC), the code commit, Python's and the libraries'
    versions."""
    from importlib import metadata

    versions = {"python": sys.version.split()[0]}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    return dict(date=now.isoformat(), commit=code_commit(), versions=versions)


def raw_file_hashes(data_dir, paths):
    """{path relative to the data folder: SHA-256} of the raw data files labels are made from."""
    hashes = {}
    for path in paths:
        name = Path(path).resolve().relative_to(Path(data_dir).resolve()).as_posix()
        hashes[name] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return hashes


def fixed_cost(price, base, solar):
    """The cost of the base load net of solar, which no decision changes."""
    return float(SLOT_MWH_PER_KW * price @ (base - solar))


def price_hash(price):
    """A short SHA-256 of a price series rounded to PRICE_HASH_DECIMALS."""
    rounded = np.round(np.asarray(price, np.float64), PRICE_HASH_DECIMALS) + 0.0  # no -0.0
    return hashlib.sha256(rounded.tobytes()).hexdigest()[:16]


def label_row(label):
    """A label's manifest entry: objective, bound and proven gap on the total cost and on the
    controllable cost (total - fixed_cost), seconds, status, price hash."""
    fixed = float(label["fixed_cost"])
    spread = max(abs(label["objective"] - fixed), 1e-9)
    controllable_gap = (label["objective"] - label["bound"]) / spread
    row = dict(
        index=int(label["index"]),
        objective=round(float(label["objective"]), DOLLAR_DECIMALS),
        bound=round(float(label["bound"]), DOLLAR_DECIMALS),
        gap=float(f"{label['gap']:.{RATIO_DIGITS}g}"),
        gap_controllable=float(f"{controllable_gap:.{RATIO_DIGITS}g}"),
        fixed_cost=round(fixed, DOLLAR_DECIMALS),
        seconds=round(float(label["seconds"]), SECONDS_DECIMALS),
        status=stored_status(label["status"], label["gap"]),
        price_hash=price_hash(label["price"]),
    )
    row["solver"] = str(label["solver"])
    row["start"] = str(label.get("start", REFERENCE_START))
    return row


def _manifest_rows(entry):
    """A shard entry's per-label columns as rows."""
    columns = entry["labels"]
    return [
        dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)
    ]


def packed_indices(manifest):
    """The scenarios a dataset manifest holds."""
    return [i for entry in manifest.get("shards", []) for i in entry["labels"]["index"]]


def read_manifest(dataset, fingerprint=None):
    """A dataset folder's manifest.json ({} if absent); a SystemExit naming the file when it is
    unreadable or belongs to other inputs or settings than `fingerprint`."""
    path = Path(dataset) / "manifest.json"
    if not path.exists():
        return {}
    try:
        manifest = json.loads(path.read_text())
        manifest["shards"], manifest["fingerprint"], manifest["reference"]  # noqa: B018
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise SystemExit(
            f"{path}: not a readable label manifest ({type(err).__name__}: {err}); restore it "
            "with git checkout, or delete the folder to label again"
        ) from None
    if fingerprint is not None and manifest["fingerprint"] != fingerprint:
        raise SystemExit(
            f"{path}: these labels were made from other inputs or settings (instance, loads, "
            "price series, seed, block, solver settings or method) than this run's: pass "
            "another --dataset, or the settings it names"
        )
    return manifest


def _checked_file(folder, entry):
    """A dataset file's bytes, checked against the SHA-256 of its manifest entry."""
    path = folder / entry["file"]
    try:
        data = path.read_bytes()
    except OSError as err:
        raise SystemExit(f"{path}: listed in the manifest but unreadable ({err})") from None
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise SystemExit(
            f"{path}: its checksum differs from manifest.json's: the file is damaged or was "
            "changed; restore it with git checkout"
        )
    return data


def stl_file_bytes(parts):
    """The STL parts (trend, seasonal, residual) as the bytes of a compressed .npz."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **dict(zip(STL_KEYS, parts, strict=True)))
    return buffer.getvalue()


def dataset_parts(dataset, manifest, price):
    """The STL parts the dataset's scenarios are rebuilt from: its stl.npz (checked against the
    manifest's SHA-256 and against the real price series they decompose), or, for a format-1
    dataset that has none, STL run again (with a warning)."""
    if "stl" not in manifest:
        print(
            f"warning: {Path(dataset) / 'manifest.json'} is format 1 (no stored STL parts): its "
            "scenarios are rebuilt by running STL again; store the parts with "
            "python csp_ldf.py --mode upgrade-dataset",
            file=sys.stderr,
        )
        return stl_parts(price)
    path = Path(dataset) / manifest["stl"]["file"]
    with np.load(io.BytesIO(_checked_file(Path(dataset), manifest["stl"]))) as z:
        missing = [key for key in STL_KEYS if key not in z.files]
        if missing:
            raise SystemExit(f"{path}: no {', '.join(missing)} array; restore it with git checkout")
        parts = tuple(z[key] for key in STL_KEYS)
    if parts[0].shape != np.shape(price) or not np.allclose(
        sum(parts), price, rtol=0, atol=STL_TOLERANCE
    ):
        raise SystemExit(
            f"{path}: these STL parts do not add up to this run's price series; restore the file "
            "with git checkout, or pass the --data-dir the dataset was made from"
        )
    return parts


def _shard_complete(cfg, dataset, i, n):
    """Whether scenario i's shard (within 0..n-1) now has every label in the label folder."""
    first = i - i % SHARD_SCENARIOS
    if first + SHARD_SCENARIOS > n:
        return False
    scenarios = range(first, first + SHARD_SCENARIOS)
    return all((cfg["out"] / f"label_{j:05d}.npz").exists() for j in scenarios)


def _new_manifest(cfg, dataset):
    """A new dataset's manifest, with its reference label written (compressed) beside it."""
    import highspy

    reference = load_label(cfg["out"] / "reference.npz")
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **reference)
    data = buffer.getvalue()
    atomic_write_bytes(dataset / "reference.npz", data)
    stl = stl_file_bytes(cfg["parts"])
    atomic_write_bytes(dataset / STL_FILE, stl)
    version = highspy.Highs().version()
    return dict(
        format=MANIFEST_FORMAT,
        created=provenance(),
        raw_files=cfg.get("raw_files"),
        stl=dict(file=STL_FILE, sha256=hashlib.sha256(stl).hexdigest()),
        instance=cfg["instance"],
        loads=cfg["loads"],
        seed=cfg["seed"],
        block=cfg["block"],
        solve=cfg["solve"],
        solver=str(reference["solver"]),
        solver_version=f"highspy {version}" if reference["solver"] == "highs" else "gurobipy",
        method=LABEL_METHOD,
        fingerprint=cfg["fingerprint"],
        shard_scenarios=SHARD_SCENARIOS,
        reference=dict(file="reference.npz", sha256=hashlib.sha256(data).hexdigest()),
        shards=[],
    )


def _write_shard(dataset, first, labels):
    """One shard file -> its manifest entry (file, checksum, per-label columns)."""
    arrays = {
        key: np.array([label[key] for label in labels], dtype)
        for key, dtype in SHARD_ARRAYS.items()
    }
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    data = buffer.getvalue()
    name = f"shard_{first // SHARD_SCENARIOS:05d}.npz"
    if len(data) > SHARD_MAX_BYTES:
        raise RuntimeError(
            f"{name}: {len(data)} bytes, above SHARD_MAX_BYTES: lower SHARD_SCENARIOS"
        )
    atomic_write_bytes(dataset / name, data)
    rows = [label_row(label) for label in labels]
    columns = {key: [row[key] for row in rows] for key in MANIFEST_LABEL_KEYS}
    if any(row["start"] != REFERENCE_START for row in rows):  # (a shard of before: no column)
        columns["start"] = [row["start"] for row in rows]
    return dict(
        file=name,
        sha256=hashlib.sha256(data).hexdigest(),
        first=first,
        count=len(labels),
        bytes=len(data),
        made=provenance(),
        labels=columns,
    )


def pack_shards(cfg, dataset, n):
    """Pack every block of SHARD_SCENARIOS scenarios within 0..n-1 that the label folder holds
    whole and the dataset does not into a compressed shard; then write the manifest (atomic, the
    shard first)."""
    dataset = Path(dataset)
    with common.folder_lock(dataset, "this label dataset"):
        common.remove_stale_temporaries(dataset)
        manifest = read_manifest(dataset, cfg["fingerprint"]) or _new_manifest(cfg, dataset)
        have = {entry["first"] for entry in manifest["shards"]}
        for first in range(0, n - SHARD_SCENARIOS + 1, SHARD_SCENARIOS):
            paths = [
                cfg["out"] / f"label_{i:05d}.npz" for i in range(first, first + SHARD_SCENARIOS)
            ]
            if first in have or not all(path.exists() for path in paths):
                continue
            labels = read_labels(paths, cfg["fingerprint"], cfg["out"])
            manifest["shards"].append(_write_shard(dataset, first, labels))
            manifest["shards"].sort(key=lambda entry: entry["first"])
            atomic_write_json(dataset / "manifest.json", manifest)


def upgrade_dataset(dataset, fingerprint, price, raw_files):
    """Convert a format-1 dataset to the current format, in place: store the STL parts that
    rebuild every labelled scenario (each checked against its label's hash first: a statsmodels
    that computes other parts is refused and nothing is written), mark as "within_gap" the labels
    whose proven gap is not below OPTIMAL_GAP, and record the conversion's provenance and the raw
    files' SHA-256. Shards and labels are not changed. Returns the number of labels checked."""
    dataset = Path(dataset)
    path = dataset / "manifest.json"
    with common.folder_lock(dataset, "this label dataset"):
        manifest = read_manifest(dataset, fingerprint)
        if not manifest:
            raise SystemExit(f"{path}: no such manifest (nothing to upgrade)")
        if manifest.get("format", 1) >= MANIFEST_FORMAT:
            print(f"{path}: already format {manifest['format']}")
            return 0
        parts = stl_parts(price)
        checked = 0
        for entry in manifest["shards"]:
            for row in _manifest_rows(entry):
                scenario, _ = price_scenario(
                    parts, manifest["block"], manifest["seed"], row["index"]
                )
                if price_hash(scenario) != row["price_hash"]:
                    raise SystemExit(
                        f"{dataset / entry['file']}: scenario {row['index']}'s price series, "
                        "rebuilt with this statsmodels, differs from the one it was labelled with: "
                        f"upgrade with the versions it was made with ({manifest['solver_version']}"
                        ", statsmodels and numpy of that time); nothing was changed"
                    )
                checked += 1
            labels = entry["labels"]
            labels["status"] = [
                stored_status(status, gap)
                for status, gap in zip(labels["status"], labels["gap"], strict=True)
            ]
        stl = stl_file_bytes(parts)
        atomic_write_bytes(dataset / STL_FILE, stl)
        shards = manifest.pop("shards")  # (kept last in the file, for the eye)
        manifest.update(
            format=MANIFEST_FORMAT,
            created=None,  # format 1 did not record it
            converted=provenance(),
            raw_files=raw_files,
            stl=dict(file=STL_FILE, sha256=hashlib.sha256(stl).hexdigest()),
            shards=shards,
        )
        atomic_write_json(path, manifest)
    return checked


def read_dataset(dataset, fingerprint, price, limit=None):
    """The labels of a dataset folder (scenarios below `limit`), in label-file form, and its
    reference label: every shard checked against its checksum and every rebuilt price scenario
    against its label's hash. ([], None) when there is no manifest."""
    dataset = Path(dataset)
    manifest = read_manifest(dataset, fingerprint)
    if not manifest:
        return [], None
    with np.load(io.BytesIO(_checked_file(dataset, manifest["reference"]))) as z:
        reference = {key: z[key].item() if z[key].ndim == 0 else z[key] for key in z.files}
    parts = dataset_parts(dataset, manifest, price)
    labels = []
    for entry in manifest["shards"]:
        path = dataset / entry["file"]
        with np.load(io.BytesIO(_checked_file(dataset, entry))) as z:
            arrays = {key: z[key] for key in SHARD_ARRAYS}
        for k, row in enumerate(_manifest_rows(entry)):
            i = row["index"]
            if limit is not None and i >= limit:
                continue
            scenario, _ = price_scenario(parts, manifest["block"], manifest["seed"], i)
            if price_hash(scenario) != row["price_hash"]:
                raise SystemExit(
                    f"{path}: scenario {i}'s price series, rebuilt from seed {manifest['seed']}, "
                    "differs from the one it was labelled with (its hash): this numpy (or, "
                    "for a format-1 dataset, statsmodels) computes other scenarios; use the "
                    "versions in the manifest"
                )
            label = {key: arrays[key][k] for key in SHARD_ARRAYS}
            label.update(row, price=scenario, solver=manifest["solver"])
            label["status"] = stored_status(row["status"], row["gap"])
            labels.append(label)
    return labels, reference


# ---------------------------------------------------------------- making labels
_WORKER = {}  # per solver process: fingerprint -> the MIP of the label set it works on


def label_mip(cfg):
    """The MIP of the label set `cfg`, built once per process and label set (_WORKER)."""
    cached = _WORKER.get(cfg["fingerprint"])
    if cached is None:
        _WORKER.clear()
        cached = build_mip(cfg["inst"], cfg["base"], cfg["solar"])
        _WORKER[cfg["fingerprint"]] = cached
    return cached


def label_scenario(cfg, i, start=None):
    """Label scenario i of the label set `cfg`, warm-started from `start` (a class schedule and
    its name, "start", which the label then records), or where None from the set's reference
    label -> (i, price, label); the scenario from the set's STL parts (cfg["parts"]). Runs in a
    Dask worker process (or in this one); the MIP is built once per process and label set, and
    reused for every scenario."""
    mip = label_mip(cfg)
    price, _ = price_scenario(cfg["parts"], cfg["block"], cfg["seed"], i)
    label = solve(mip, price, start=cfg["reference"] if start is None else start, **cfg["solve"])
    if start is not None:
        label["start"] = start["start"]
    return i, price, label


def save_scenario(cfg, i, price, label):
    """Check a solved scenario's schedule and write it atomically to out/label_#####.npz, with
    its start where that is not the reference label."""
    provenance = dict(index=i, seed=cfg["seed"], block=cfg["block"], fingerprint=cfg["fingerprint"])
    provenance["fixed_cost"] = fixed_cost(price, cfg["base"], cfg["solar"])
    if "start" in label:
        provenance["start"] = label["start"]
    path = cfg["out"] / f"label_{i:05d}.npz"
    save_label(path, label, price, cfg["inst"], cfg["base"], cfg["solar"], **provenance)


IN_FLIGHT_PER_THREAD = 2  # tasks given to the cluster at once, per worker thread


def solve_on_dask(task, starts, workers, cluster):
    """Yield (i, price, label) as a Dask cluster solves the scenarios of `starts`, pairs (i, start)
    (label_scenario): the scheduler at `cluster` (or $LDF_DASK_SCHEDULER), else a local cluster of
    `workers` processes. Dask runs a killed worker's tasks again elsewhere; this process writes
    every result, so each scenario is written once. A few tasks are in flight at a time, so that
    Ctrl-C or an error stops soon (and starts are made only as their tasks are sent)."""
    from dask.distributed import as_completed

    import csp_ldf  # workers import this module by name and keep its _WORKER cache

    with common.dask_client(workers, cluster) as client:
        waiting = iter(starts)
        running = as_completed()

        def top_up():  # the window grows with the cluster (batch-system workers join late)
            threads = sum(client.nthreads().values())
            while running.count() < IN_FLIGHT_PER_THREAD * max(threads, workers):
                pair = next(waiting, None)
                if pair is None:
                    return
                i, start = pair
                key = f"csp-label-{task['fingerprint'][:12]}-{i}"
                future = client.submit(csp_ldf.label_scenario, task, i, start, key=key, pure=False)
                running.add(future)

        top_up()
        for future in running:
            yield future.result()
            top_up()


def _solve(cfg, todo, workers, cluster, progress, starts=None):
    """Yield (i, price, label) for the scenarios `todo` as they are solved, with a progress bar:
    in this process (workers=1 and no cluster), else on Dask (solve_on_dask). starts: as
    generate_labels'; None: every scenario from the reference label."""
    from tqdm import tqdm

    task = {key: value for key, value in cfg.items() if key != "out"}
    pairs = ((i, None) for i in todo) if starts is None else starts(cfg, todo)
    if workers == 1 and not (cluster or os.environ.get(common.SCHEDULER_VARIABLE)):
        solved = (label_scenario(task, i, start) for i, start in pairs)
    else:
        solved = solve_on_dask(task, pairs, workers, cluster)
    bar = tqdm(
        solved,
        total=len(todo),
        disable=not progress,
        desc=f"labels {cfg['instance']}",
        unit="label",
    )
    with bar:
        for i, price, label in bar:
            bar.set_postfix(s=f"{label['seconds']:.1f}", gap=f"{label['gap']:.4f}")
            yield i, price, label


def label_summary(out, fingerprint=None, dataset=None):
    """Times, gaps (on the total and on the controllable cost), solvers and statuses of the labels
    of the dataset (if any) and of folder `out` (each checked to carry `fingerprint`), also to
    out/summary.json."""
    rows = []
    manifest = read_manifest(dataset, fingerprint) if dataset else {}
    for entry in manifest.get("shards", []):
        rows += [dict(row, solver=manifest["solver"]) for row in _manifest_rows(entry)]
    packed = {row["index"] for row in rows}
    paths = [path for path in sorted(out.glob("label_*.npz")) if label_index(path) not in packed]
    for label in read_labels(paths, fingerprint, out):
        rows.append(label_row(label))
    if not rows:
        return {}
    seconds = np.array([row["seconds"] for row in rows])
    gaps = np.array([row["gap"] for row in rows])
    controllable = np.array([row["gap_controllable"] for row in rows])
    statuses = [row["status"] for row in rows]
    summary = dict(
        labels=len(rows),
        in_dataset=len(packed),
        seconds_mean=seconds.mean(),
        seconds_median=np.median(seconds),
        seconds_max=seconds.max(),
        gap_mean=gaps.mean(),
        gap_max=gaps.max(),
        gap_controllable_median=np.median(controllable),
        gap_controllable_mean=controllable.mean(),
        gap_dollars_mean=np.mean([row["objective"] - row["bound"] for row in rows]),
        solver=sorted({row["solver"] for row in rows}),
        status={status: statuses.count(status) for status in sorted(set(statuses))},
    )
    starts = [row.get("start", REFERENCE_START) for row in rows]
    if set(starts) != {REFERENCE_START}:  # (every label from the reference label: as before)
        summary["start"] = {start: starts.count(start) for start in sorted(set(starts))}
    atomic_write_json(out / "summary.json", summary)
    return summary


def summary_text(summary):
    """The labels summary in words (--mode labels prints it above its JSON form)."""
    if not summary:
        return "no labels yet"
    starts = f"; starts {summary['start']}" if "start" in summary else ""
    return (
        f"{summary['labels']} labels ({summary['in_dataset']} in the dataset's shards); seconds "
        f"per label mean {summary['seconds_mean']:.1f}, median {summary['seconds_median']:.1f}, "
        f"max {summary['seconds_max']:.1f}; proven gap on the total cost mean "
        f"{100 * summary['gap_mean']:.2f} %, max {100 * summary['gap_max']:.2f} % "
        f"({summary['gap_dollars_mean']:.1f} $ mean), on the controllable cost median "
        f"{100 * summary['gap_controllable_median']:.0f} %; statuses {summary['status']}{starts}\n"
        f"this run: {summary['this_run_labels']} labels with {summary['this_run_workers']} "
        f"worker(s), {summary['this_run_labels_per_hour']:.0f} labels per hour"
    )


def generate_labels(
    inst,
    base,
    solar,
    price,
    out,
    n,
    seed=0,
    block=DAY,
    workers=1,
    shard=(0, 1),
    limit=None,
    progress=True,
    dataset=None,
    cluster=None,
    loads="forecast",
    raw_files=None,
    starts=None,
    **solve_kw,
):
    """Label this shard's scenarios of 0..n-1 that neither `dataset` nor `out` holds yet into
    out/label_#####.npz (resume), each warm-started from the reference label (the real price's)
    so that a label does not depend on interruptions; with `dataset`, every complete block of
    SHARD_SCENARIOS scenarios is packed into a shard there (pack_shards). Workers: this process
    (workers=1, no cluster) or Dask (solve_on_dask). Returns the summary (also summary.json).
    raw_files: {name: SHA-256} of the raw data files, recorded in a new dataset's manifest.
    starts: None (the reference label), or starts(cfg, todo) -> pairs (i, start) for the
    scenarios `todo` in their order, each start a class schedule (recurring_start, oneoff_start)
    and its name ("start"), which its label records (--start-from: NetworkStarts); the starts are
    made in this process, as the solves need them.

    The folder's config.json and every label carry the fingerprint of the inputs and settings
    (label_fingerprint): a folder made from others is refused. A second run on the folder waits
    for the first (a lock), then solves only what is left; temporaries of killed writes go.

    The start is not part of the fingerprint, so a folder (and its dataset) may hold labels of
    several starts, and a run with another start resumes it: a start changes which schedule
    within the gap HiGHS returns and how soon, never the MIP, the price scenario or the gap that
    every label is proven within and checked against. So a network's starts can extend the
    dataset of the labels it was trained on; each label records its start (label_row: the
    manifest's "start" column, the summary's "start" counts)."""
    started = time.perf_counter()
    out = Path(out)
    fingerprint = label_fingerprint(inst, base, solar, price, seed, block, solve_kw)
    config = dict(instance=inst["name"], seed=seed, block=block, **solve_kw)
    with common.folder_lock(out, "these labels"):
        common.remove_stale_temporaries(out)
        _label_config(out, {**config, "fingerprint": fingerprint})
        reference = out / "reference.npz"
        packed = read_manifest(dataset, fingerprint) if dataset else {}
        if reference.exists():
            read_labels([reference], fingerprint, out)
        elif packed:  # a fresh clone: the dataset's reference label, unchanged
            atomic_write_bytes(reference, _checked_file(Path(dataset), packed["reference"]))
        else:
            label = solve(build_mip(inst, base, solar), price, **solve_kw)
            provenance = dict(index=-1, seed=seed, block=block, fingerprint=fingerprint)
            provenance["fixed_cost"] = fixed_cost(price, base, solar)
            save_label(reference, label, price, inst, base, solar, **provenance)
        parts = dataset_parts(dataset, packed, price) if packed else stl_parts(price)
        cfg = dict(inst=inst, base=base, solar=solar, price=price, out=out, solve=solve_kw)
        cfg.update(config, fingerprint=fingerprint, reference=load_label(reference), loads=loads)
        cfg.update(parts=parts, raw_files=raw_files)
        done = set(packed_indices(packed))
        shard_index, n_shards = shard
        todo = [
            i
            for i in range(shard_index, n, n_shards)
            if i not in done and not (out / f"label_{i:05d}.npz").exists()
        ]
        todo = todo[:limit]
        if dataset:
            pack_shards(cfg, dataset, n)
        solved = 0
        for i, scenario, label in _solve(cfg, todo, workers, cluster, progress, starts):
            save_scenario(cfg, i, scenario, label)
            solved += 1
            if dataset and _shard_complete(cfg, dataset, i, n):
                pack_shards(cfg, dataset, n)
        summary = label_summary(out, fingerprint, dataset)
        hours = (time.perf_counter() - started) / 3600
        summary.update(
            this_run_labels=solved,
            this_run_workers=workers if cluster is None else cluster,
            this_run_labels_per_hour=solved / hours,
        )
        return summary


# ================================================================ 4.3 model
NEG = -1e9  # logit of a start that the solver's columns rule out
ARCH = ("conv", "kernels", "pool", "mixer", "head")  # the network options a checkpoint keeps
INPUT_SERIES = ("price", "base", "solar")  # the network's input channels
INSTANCE_BUFFERS = ("feats", "mask_rec", "mask_one")  # what a network keeps of its instance
TEST_SHARE = 0.1
VALIDATION_SHARE = 0.1
# per label: the dataset array and its dtype
LABEL_ARRAYS = dict(
    price=float,
    recurring_start=int,
    oneoff_start=int,
    battery_state=int,
    objective=float,
    gap=float,
    seconds=float,
    index=int,
)


def _check_label_shapes(label, path, inst, n_slots):
    """A SystemExit naming a label file whose decisions do not fit the instance."""
    expected = dict(
        price=(n_slots,),
        recurring_start=(inst["n_rec"],),
        oneoff_start=(inst["n_oneoff"],),
        battery_state=(len(inst["cap"]), n_slots),
    )
    for key, shape in expected.items():
        if np.shape(label[key]) != shape:
            raise SystemExit(
                f"{path}: a label of another instance ({key} of shape {np.shape(label[key])}, "
                f"expected {shape}): delete it, or pass the --labels-dir and --instance it "
                "belongs to"
            )


def load_dataset(inst, base, solar, folder, seed=0, limit=None, price=None, dataset=None):
    """The labels of scenarios 0..limit-1 (all if None) in the label dataset `dataset` (shards,
    read first; needs `price`) and in the label folder `folder`, as arrays, split
    80/10/10 by a draw per scenario index and seed: a scenario stays in its split as labels are
    added (the first draws go to test and validation if too few did).

    Every label must carry the folder's fingerprint (config.json); with `price` (the real series)
    the folder's fingerprint must also be that of these inputs (instance, loads, price)."""
    folder = Path(folder)
    config = read_label_config(folder)
    fingerprint = config.get("fingerprint")
    if fingerprint and price is not None:
        settings = {key: value for key, value in config.items() if key not in CONFIG_KEYS}
        seed_and_block = (config.get("seed"), config.get("block"))
        now = label_fingerprint(inst, base, solar, price, *seed_and_block, settings)
        if now != fingerprint:
            raise SystemExit(
                f"{folder}: these labels were made from other inputs (the instance file, the "
                "price series or the loads) than this run's: pass another --labels-dir, or delete "
                "the folder and make the labels again with --mode labels"
            )
    packed, reference_label = [], None
    manifest = read_manifest(dataset) if dataset and price is not None else {}
    if manifest:
        if fingerprint and fingerprint != manifest["fingerprint"]:
            raise SystemExit(
                f"{folder} and {dataset} hold labels made with other inputs or settings: "
                "delete the label folder (or pass another --labels-dir)"
            )
        now = label_fingerprint(
            inst, base, solar, price, manifest["seed"], manifest["block"], manifest["solve"]
        )
        packed, reference_label = read_dataset(dataset, now, price, limit)
        fingerprint = manifest["fingerprint"]
    for label in packed:
        _check_label_shapes(label, Path(dataset) / "manifest.json", inst, len(base))
    in_dataset = {label["index"] for label in packed}
    paths = [
        path for path in sorted(folder.glob("label_*.npz")) if label_index(path) not in in_dataset
    ]
    if limit is not None:
        paths = [path for path in paths if label_index(path) < limit]
    reference = folder / "reference.npz"  # the real price's label: a feasible class schedule
    if reference.exists() and reference_label is None:
        paths.append(reference)
    labels = read_labels(paths, fingerprint, folder)
    for path, label in zip(paths, labels, strict=True):
        _check_label_shapes(label, path, inst, len(base))
    if reference.exists() and reference_label is None:
        reference_label = labels.pop()
    has_reference = reference_label is not None
    labels = sorted(packed + labels, key=lambda label: label["index"])
    if len(labels) < 3:
        where = f"{dataset} and {folder}" if dataset else folder
        raise SystemExit(f"{where}: {len(labels)} labels; make some with --mode labels first")
    ds = dict(inst=inst, base=base, solar=solar)
    for key, dtype in LABEL_ARRAYS.items():
        ds[key] = np.array([label[key] for label in labels], dtype)
    if has_reference:
        ds["fallback"] = (reference_label["recurring_start"], reference_label["oneoff_start"])
    else:
        ds["fallback"] = (ds["recurring_start"][0], ds["oneoff_start"][0])
    u = np.array([np.random.default_rng([seed, i]).random() for i in ds["index"]])
    order = np.argsort(u)
    n_test = max(1, np.sum(u < TEST_SHARE))
    in_validation_range = (u >= TEST_SHARE) & (u < TEST_SHARE + VALIDATION_SHARE)
    n_test_and_val = n_test + max(1, np.sum(in_validation_range))
    n_test_and_val = min(len(u) - 1, n_test_and_val)  # and one to train
    ds["split"] = dict(
        test=np.sort(order[:n_test]),
        val=np.sort(order[n_test:n_test_and_val]),
        train=np.sort(order[n_test_and_val:]),
    )
    return ds


def head_features(inst):
    """Per head, each feature scaled to max 1 among the classes and among the batteries:
    rooms, large, load, duration, value, penalty, #predecessors (classes) | capacity, max power,
    efficiency (batteries)."""
    n_classes = len(inst["dur"])
    class_features = [inst[key] for key in ("rooms", "large", "load", "dur", "value", "penalty")]
    class_features.append([len(p) for p in inst["prec"]])
    features = np.zeros((n_classes + len(inst["cap"]), len(class_features)))
    features[:n_classes] = np.stack(class_features, 1)
    features[n_classes:, :3] = np.stack([inst["cap"], inst["m"], inst["eff"]], 1)
    for rows in (features[:n_classes], features[n_classes:]):  # views, scaled in place
        rows /= np.maximum(np.abs(rows).max(0), 1e-9)
    return torch.tensor(features, dtype=torch.float32)


def option_masks(inst, T):
    """The starts that the solver's columns allow (duration, the precedences' day windows) ->
    (recurring classes x options, once-off classes x (slots + 'unscheduled'))."""
    cols = start_columns(inst)
    n_rec = inst["n_rec"]
    recurring = np.zeros((n_rec, WORKDAYS * WEEK_OPTIONS), bool)
    oneoff = np.zeros((len(inst["dur"]) - n_rec, T + 1), bool)
    oneoff[:, T] = True
    of_recurring = cols["cls"] < n_rec
    recurring[cols["cls"][of_recurring], cols["start"][of_recurring]] = True
    oneoff[cols["cls"][~of_recurring] - n_rec, cols["start"][~of_recurring]] = True
    return torch.from_numpy(recurring), torch.from_numpy(oneoff)


def uniform_parameter(*shape, fan_in):
    """A weight initialised as nn.Linear's: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = fan_in**-0.5
    return nn.Parameter(torch.empty(*shape).uniform_(-bound, bound))


class CSPNet(nn.Module):
    """Conv1d x3 (BN, ReLU), max-pool -> mixer MLP -> a head per class and battery
    (w1 -> w2 -> options, each head also fed its own features) as grouped products: one matmul
    (shared input), one bmm, one bmm per output size. Starts the MIP rules out get NEG.

    The convolutions run as (1, k) Conv2d on a channels-last input: the same function as the
    thesis' Conv1d, on oneDNN's fast path. (The attribute names are the checkpoints' keys.)"""

    def __init__(
        self,
        inst,
        T,
        conv=(64, 128, 64),
        kernels=(8, 5, 3),
        pool=32,
        mixer=(2048, 1024),
        head=(512, 256),
    ):
        super().__init__()
        layers = []
        channels = len(INPUT_SERIES)
        length = T
        for out_channels, k in zip(conv, kernels, strict=True):
            convolution = nn.Conv2d(channels, out_channels, (1, k))
            layers += [convolution, nn.BatchNorm2d(out_channels), nn.ReLU()]
            channels = out_channels
            length = length - k + 1
        self.features = nn.Sequential(*layers, nn.MaxPool2d((1, pool)), nn.Flatten())
        mixer_layers = []
        width = channels * (length // pool)
        for out_width in mixer:
            mixer_layers += [nn.Linear(width, out_width), nn.BatchNorm1d(out_width), nn.ReLU()]
            width = out_width
        self.mixer = nn.Sequential(*mixer_layers)
        self.register_buffer("feats", head_features(inst))
        n_heads, n_features = self.feats.shape
        w1, w2 = head
        # (heads, options) of the recurring, the once-off and the battery heads
        self.groups = (
            (inst["n_rec"], WORKDAYS * WEEK_OPTIONS),
            (inst["n_oneoff"], T + 1),
            (len(inst["cap"]), N_BATTERY_STATES * T),
        )
        self.w1 = nn.Linear(width, n_heads * w1)
        self.w1f = uniform_parameter(n_heads, n_features, w1, fan_in=width + n_features)
        self.w2 = uniform_parameter(n_heads, w1, w2, fan_in=w1)
        self.b2 = uniform_parameter(n_heads, 1, w2, fan_in=w1)
        self.bn1 = nn.BatchNorm1d(n_heads * w1)
        self.bn2 = nn.BatchNorm1d(n_heads * w2)
        self.w3 = nn.ParameterList([uniform_parameter(k, w2, o, fan_in=w2) for k, o in self.groups])
        self.b3 = nn.ParameterList([uniform_parameter(k, 1, o, fan_in=w2) for k, o in self.groups])
        recurring_mask, oneoff_mask = option_masks(inst, T)
        self.register_buffer("mask_rec", recurring_mask)
        self.register_buffer("mask_one", oneoff_mask)

    def trunk(self, x):
        """(B, 3, T) -> conv features -> mixer -> (B, mixer[-1])."""
        x = x[:, :, None].contiguous(memory_format=torch.channels_last)
        return self.mixer(self.features(x))

    def forward(self, x):
        z = self.trunk(x)
        B = len(z)
        n_heads = len(self.feats)
        h = self.w1(z) + torch.einsum("hf,hfo->ho", self.feats, self.w1f).reshape(-1)
        h = F.relu(self.bn1(h)).view(B, n_heads, -1).transpose(0, 1)
        h = torch.baddbmm(self.b2, h, self.w2)  # (heads, B, w2)
        h = F.relu(self.bn2(h.transpose(0, 1).reshape(B, -1)))
        h = h.view(B, n_heads, -1).transpose(0, 1)
        logits = []  # per kind: (B, heads of that kind, options)
        first = 0
        for (n_of_kind, _), w, b in zip(self.groups, self.w3, self.b3, strict=True):
            last = first + n_of_kind
            logits.append(torch.baddbmm(b, h[first:last], w).transpose(0, 1))
            first = last
        recurring, oneoff, battery = logits
        return {
            "recurring_start": recurring.masked_fill(~self.mask_rec, NEG),
            "oneoff_start": oneoff.masked_fill(~self.mask_one, NEG),
            "battery_state": battery.reshape(B, battery.shape[1], -1, N_BATTERY_STATES),
        }


def make_model(ds, cfg):
    return CSPNet(ds["inst"], ds["price"].shape[1], **{key: cfg[key] for key in ARCH})


def load_csp_checkpoint(path, what="checkpoint"):
    """common.load_checkpoint (an error naming a missing, truncated or garbage file), then one
    sentence for a checkpoint of another problem or without the CSP network's settings."""
    checkpoint = common.load_checkpoint(path, what)
    fingerprint = checkpoint.get("fingerprint")
    problem = fingerprint.get("problem", "csp") if isinstance(fingerprint, dict) else "csp"
    if problem != "csp":
        raise SystemExit(
            f"{path}: a {problem} checkpoint (of {problem}_ldf.py), not a class scheduling "
            "checkpoint of csp_ldf.py"
        )
    config = checkpoint.get("config")
    if "norm" not in checkpoint or not isinstance(config, dict) or not set(ARCH) <= set(config):
        raise SystemExit(
            f"{path}: not a class scheduling checkpoint of csp_ldf.py (no network settings or "
            "input normalisation in it)"
        )
    return checkpoint


def checkpoint_model(ds, checkpoint, path):
    """The network of a CSP checkpoint with its weights; one sentence when they do not fit this
    instance (another instance, or weights of another architecture), also where the shapes fit
    but the instance the network keeps (INSTANCE_BUFFERS) is another one."""
    try:
        model = make_model(ds, checkpoint["config"])
        own = {name: getattr(model, name).clone() for name in INSTANCE_BUFFERS}
        model.load_state_dict(checkpoint["model"])
    except (RuntimeError, ValueError, TypeError, KeyError) as err:
        first_line = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
        raise SystemExit(
            f"{path}: its weights do not fit instance {ds['inst']['name']} ({type(err).__name__}: "
            f"{first_line}); train a model on this instance's labels"
        ) from None
    other = [name for name in INSTANCE_BUFFERS if not torch.equal(getattr(model, name), own[name])]
    if other:
        raise SystemExit(
            f"{path}: a network of another instance than {ds['inst']['name']} (its "
            f"{', '.join(other)} differ: the classes' and batteries' features or allowed starts); "
            "train a model on this instance's labels"
        )
    return model


def inputs(ds, norm):
    """(N, 3, T): price, base load and solar, each standardised by the training set's mean and
    standard deviation."""
    x = np.stack(np.broadcast_arrays(*(ds[key] for key in INPUT_SERIES)), 1)
    return torch.tensor((x - norm["mean"][:, None]) / norm["std"][:, None], dtype=torch.float32)


# ================================================================ 4.3 loss
def label_loss(out, ds, rows):
    """Cross-entropy of every head; per instance, the mean over each kind's heads, summed over
    the three kinds."""

    def per_instance(logits, labels):
        ce = F.cross_entropy(logits.flatten(0, -2), labels.flatten(), reduction="none")
        return ce.view(len(labels), -1).mean(1)

    return sum(per_instance(out[key], torch.as_tensor(ds[key][rows])) for key in DECISION_KEYS)


def battery_charge(onehot, cap, m):
    """Charge (batch, battery, slot) of one-hot states (charge, idle, discharge): a battery starts
    full and moves SLOT_HOURS m a slot."""
    moves = (onehot[..., CHARGE] - onehot[..., DISCHARGE]) * (SLOT_HOURS * m)[:, None]
    return cap[:, None] + torch.cumsum(moves, -1)


def battery_violation(logits, inst, k=20.0):
    """nu_b (eq. 18): the mean of max(0, -C) + max(0, C - cap) over batteries and slots, of the
    argmax states; its gradient through the one-hot surrogate (eq. 16)."""
    cap = torch.as_tensor(inst["cap"], dtype=logits.dtype)
    m = torch.as_tensor(inst["m"], dtype=logits.dtype)
    charge = battery_charge(common.onehot_surrogate(logits, k), cap, m)
    return (F.relu(-charge) + F.relu(charge - cap[:, None])).mean((1, 2))


# ================================================================ measures (Tables 7-9)
# through the labels' checker: of the test schedules, and of the validation schedules in training
EXCESS_PERCENTILE = 95  # the $ above the label: its mean, this percentile and its max
FAMILIES = (
    "battery min",
    "battery capacity",
    "min or capacity",
    "small rooms",
    "large rooms",
    "precedence",
)


def _family_stats(violation):
    """% of the constraint instances violated, mean degree, max degree."""
    if not violation.size:
        return (0.0, 0.0, 0.0)
    return (100 * (violation > 1e-6).mean(), violation.mean(), violation.max())


def evaluate_schedules(ds, rows, sched):
    """Through the checker: AR (eq. 17), % feasible, and per family (Tables 7-8) the % of
    constraint instances violated and the violation degree (kWh; rooms over; precedence pairs:
    days too late, 1 if the predecessor is missing)."""
    inst = ds["inst"]
    costs = []
    n_violations = []
    families = []  # per instance: per family (% violated, mean degree, max degree)
    for j, i in enumerate(rows):
        detail = {}
        recurring_start, oneoff_start, battery_state = (decisions[j] for decisions in sched[:3])
        cost, bad = check_schedule(
            inst,
            ds["base"],
            ds["solar"],
            ds["price"][i],
            recurring_start,
            oneoff_start,
            battery_state,
            detail=detail,
        )
        below = np.maximum(0, -detail["charge"])
        above = np.maximum(0, detail["charge"] - inst["cap"][:, None])
        rooms_over = np.maximum(0, detail["rooms"] - [[inst["n_small"]], [inst["n_large"]]])
        measures = (below, above, below + above, rooms_over[0], rooms_over[1], detail["prec"])
        families.append([_family_stats(v) for v in measures])
        costs.append(cost)
        n_violations.append(sum(bad.values()))
    ar = common.approximation_ratio(costs, ds["objective"][rows], gap=ds["gap"][rows])
    # the controllable cost: the total less the base load net of solar, which no decision moves
    fixed = np.array([fixed_cost(ds["price"][i], ds["base"], ds["solar"]) for i in rows])
    excess = np.array(costs) - ds["objective"][rows]
    controllable = np.abs(ds["objective"][rows] - fixed)
    by_family = np.array(families).transpose(1, 0, 2)  # family, instance, statistic
    return dict(
        ar_mean=ar.mean(),
        ar_max=ar.max(),
        ar_min=ar.min(),
        excess_mean=excess.mean(),
        excess_p95=np.percentile(excess, EXCESS_PERCENTILE),
        excess_max=excess.max(),
        controllable_mean=controllable.mean(),
        ar_controllable=1 + excess.mean() / controllable.mean(),
        feasible_pct=100 * np.mean(np.array(n_violations) == 0),
        fam={
            family: dict(
                pct_mean=v[:, 0].mean(),
                pct_max=v[:, 0].max(),
                degree_mean=v[:, 1].mean(),
                degree_avg_max=v[:, 2].mean(),
            )
            for family, v in zip(FAMILIES, by_family, strict=True)
        },
    )


# ================================================================ 4.3 train
def predict(model, x, batch=32):
    """Network outputs (float32), computed in the precision of the model's weights
    (.bfloat16() for --bf16)."""
    x = x.to(next(model.parameters()).dtype)
    with torch.no_grad():
        outs = [model.eval()(x[i : i + batch]) for i in range(0, len(x), batch)]
    return {key: torch.cat([o[key] for o in outs]).float() for key in outs[0]}


def raw_decode(out):
    """The argmax decisions (recurring_start, oneoff_start, battery_state)."""
    return tuple(out[key].argmax(-1).numpy() for key in DECISION_KEYS)


def trained_on(ck, scenarios):
    """Those of `scenarios` that checkpoint ck trained on (all, if ck predates that record)."""
    if "scenarios" not in ck:
        return set(scenarios)
    return set(ck["scenarios"]["train"]) & set(scenarios)


def train(args, ds, run_dir):
    """FC (label loss) or LDF (+ lambda_b nu_b, lambda_b by eq. 20 after each epoch) with the
    shared loop common.train_ldf, selected by validation AR (fc) or mu-loss (ldf); last.pt holds
    the optimizer and state to resume. Returns the path of the selected checkpoint."""
    ldf = args.model == "ldf"
    idx = ds["split"]
    run_dir = Path(run_dir)
    pre = load_csp_checkpoint(args.pretrained, "pretrained checkpoint") if args.pretrained else None
    scen = {k: ds["index"][v].tolist() for k, v in idx.items()}  # checkpoints compare them
    if pre:
        seen = len(trained_on(pre, scen["val"] + scen["test"]))
        if seen:
            raise SystemExit(
                f"{args.pretrained} trained on {seen} validation/test scenarios: "
                "retrain it on these labels"
            )
    cfg = {**vars(args), **({k: pre["config"][k] for k in ARCH} if pre else {})}
    if ldf and args.dual in PER_INSTANCE_DUALS and args.step is None:
        # one lambda_i per scenario: the thesis' step times the training scenarios, so that their
        # mean moves as the thesis' lambda_b does when every scenario is violated alike
        cfg["step"] = STEP * len(idx["train"])
    if ldf and args.dual == "augmented" and args.rho is None:
        cfg["rho"] = cfg["step"]
    step = cfg["step"] if ldf else STEP
    fingerprint = {"problem": "csp", "model": args.model, "scenarios": scen}
    if ldf and args.dual != "scalar":  # (scalar runs keep the fingerprint of before --dual)
        fingerprint.update(dual=args.dual, step=step, rho=cfg["rho"], dual_lr=args.dual_lr)
    resume = common.resume_checkpoint(run_dir, fingerprint, args.fresh)
    n_series = len(INPUT_SERIES)
    raw = inputs(ds, dict(mean=np.zeros(n_series), std=np.ones(n_series))).numpy()[idx["train"]]
    if resume:
        norm = resume["norm"]
    elif pre:
        norm = pre["norm"]
    else:
        norm = dict(mean=raw.mean((0, 2)), std=raw.std((0, 2)) + 1e-6)
    set_seed(args.seed)
    if pre:
        model = checkpoint_model(ds, {**pre, "config": cfg}, args.pretrained)
    else:
        model = make_model(ds, cfg)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, fused=True)  # one pass (CPU too)
    x = inputs(ds, norm)

    def batch_loss(rows, multiplier):
        out = model(x[rows])
        label = label_loss(out, ds, rows)
        if ldf:
            nu = battery_violation(out["battery_state"], ds["inst"], args.k)
        else:
            nu = torch.zeros_like(label)
        return (label + multiplier * nu).mean(), label, nu

    def validate():
        out = predict(copy.deepcopy(model).bfloat16() if args.bf16 else model, x[idx["val"]])
        val_nu = battery_violation(out["battery_state"], ds["inst"]).numpy()
        return {
            "ar": evaluate_schedules(ds, idx["val"], raw_decode(out))["ar_mean"],
            "label_loss": label_loss(out, ds, idx["val"]).numpy(),
            "violation": val_nu,
            "nu_b": val_nu.mean(),
        }

    select = f"mu{args.mu:g}" if ldf else "ar"
    dual_options = {}
    if args.dual == "augmented":
        dual_options = {"rho": cfg["rho"]}
    elif args.dual == "dual-net":  # the dual network reads the scenario's input series
        dual_options = {"features": x.flatten(1), "dual_lr": args.dual_lr}
    settings = common.LDFSettings(
        ldf=ldf,
        epochs=args.epochs,
        patience=args.patience,
        batch_size=args.batch_size,
        max_grad_norm=args.max_grad_norm,  # (the thesis' misspelt config key never clipped)
        lambda0=args.lambda0,
        step=step,  # eq. 20: lambda_b += step * sum of nu_b over the epoch's batches
        mus=(args.mu,),
        select=select,
        track=(select,),
        seed=args.seed,
        dual=args.dual if ldf else "scalar",
        dual_options=dual_options,
    )
    try:
        _, selected = common.train_ldf(
            model,
            opt,
            idx["train"],
            batch_loss,
            validate,
            run_dir,
            settings,
            saved={"norm": norm, "config": cfg, "scenarios": scen},
            fingerprint=fingerprint,
            resume=resume,
        )
    except common.TrainingDiverged as err:
        raise SystemExit(str(err)) from None
    return Path(selected)


# ======================================================= 4.4 schedules without learning; improve
# The batteries separate from the classes (build_mip), so a class schedule is one start column per
# class (none for an unscheduled once-off class) and its controllable cost is the sum of its
# columns' costs (objective): the price of the class load less the once-off values. The batteries
# are then dispatched exactly by battery_dispatch. Everything here works on start columns.
IMPROVE_EPS = 1e-6  # $: a move must lower the cost by more than this
EJECTION_TARGETS = 16  # per class, the cheapest room-blocked starts an ejection move tries
CHAIN_LIMIT = 5  # a recurring class moves with its descendants only where it has this few
CENTS = 100  # min-cut capacities are integers: costs in cents
CUT_INFINITE = 2**30  # capacity of an edge the minimum cut may not cross
NO_COLUMN = CUT_INFINITE // 4  # capacity of a day on which a class has no column that fits
MAX_PASSES = 50  # improvement passes over all moves (each pass lowers the cost, or it stops)
IMPROVE_SETTINGS = (  # the constants above, in the order the op ldf_ip::csp_improve reads them
    IMPROVE_EPS,
    EJECTION_TARGETS,
    CHAIN_LIMIT,
    MAX_PASSES,
    CENTS,
    CUT_INFINITE,
    NO_COLUMN,
)


def topological_order(inst):
    """The classes, recurring ones first, each after its predecessors."""
    n = len(inst["dur"])
    placed = set()
    order = []
    while len(order) < n:
        for a in range(n):
            if a not in placed and placed.issuperset(inst["prec"][a]):
                order.append(a)
                placed.add(a)
    recurring = [a for a in order if a < inst["n_rec"]]
    return recurring + [a for a in order if a >= inst["n_rec"]]


def schedule_space(mip):
    """What the heuristics need of the MIP's start columns: per class, its columns and their
    days; per column, its slots and its runs (one a week for a recurring class: first slots,
    padded with T, where a run covers no slot); room sizes and needs, predecessors and
    successors, the static day windows of day_windows and a precedence order; where the C++ op
    of improve runs, all of that packed for it ("packed")."""
    inst = mip["inst"]
    cols = mip["cols"]
    n = len(inst["dur"])
    T = len(mip["base"])
    by_class = [np.flatnonzero(cols["cls"] == a) for a in range(n)]
    cover_t = cols["cover"].T.tocsr()
    slots = [cover_t[k].indices for k in range(len(cols["cls"]))]
    dur = inst["dur"][cols["cls"]]
    first_slots = [column_slots[::d] for column_slots, d in zip(slots, dur, strict=True)]
    run_start = np.full((len(slots), max(len(f) for f in first_slots)), T)
    for k, f in enumerate(first_slots):
        run_start[k, : len(f)] = f
    successors = [[] for _ in range(n)]
    for a, predecessors in enumerate(inst["prec"]):
        for p in predecessors:
            successors[p].append(a)
    column_of = np.full((n, T + 1), -1)  # (class, start in decision form) -> column
    column_of[cols["cls"], cols["start"]] = np.arange(len(cols["cls"]))
    lo, hi = day_windows(inst)
    order = topological_order(inst)
    class_start, class_end = [], []  # per class: its columns' runs (as many as it has)
    for a, ks in enumerate(by_class):
        n_runs = int((run_start[ks] < T).sum(1).max())
        class_start.append(run_start[ks, :n_runs])
        class_end.append(run_start[ks, :n_runs] + inst["dur"][a])
    space = dict(
        inst=inst,
        n=n,
        n_rec=inst["n_rec"],
        T=T,
        cls=cols["cls"],
        by_class=by_class,
        class_day=[cols["day"][ks] for ks in by_class],
        class_start=class_start,
        class_end=class_end,
        slots=slots,
        run_float=np.where(run_start < T, run_start, np.nan),  # (overlaps: padding never does)
        dur=dur,
        day=cols["day"],
        start=cols["start"],
        column_of=column_of,
        size=inst["large"].astype(int),
        need=inst["rooms"].astype(float),
        room_cap=np.array([inst["n_small"], inst["n_large"]], float),
        prec=[np.array(p, int) for p in inst["prec"]],
        succ=[np.array(p, int) for p in successors],
        lo=lo,
        hi=hi,
        order=order,
        rank=np.argsort(order),
    )
    if csp_op.available():  # the op's tensors, packed (and the op loaded) before anything is timed
        space["packed"] = csp_op.pack(space)
    return space


def column_costs(mip, prices):
    """Each scenario's cost of each start column: (scenarios, columns), $."""
    cost_per_kw = SLOT_MWH_PER_KW * np.atleast_2d(prices)
    return (mip["load"].T @ cost_per_kw.T).T - mip["cols"]["value"]


class ClassSchedule:
    """One start column per class (-1: an unscheduled once-off class), with the rooms in use per
    slot and the day of each class, kept up to date as classes move."""

    def __init__(self, space, chosen):
        self.space = space
        self.chosen = np.full(space["n"], -1)
        self.day = np.full(space["n"], -1)
        self.use = np.zeros((2, space["T"]))  # small and large rooms in use
        self.deadline = np.inf  # (perf_counter) ejections and chain shifts stop between tries
        for a, k in enumerate(chosen):
            if k >= 0:
                self.put(a, k)

    def put(self, a, k):
        s = self.space
        self.use[s["size"][a], s["slots"][k]] += s["need"][a]
        self.chosen[a] = k
        self.day[a] = s["day"][k]

    def take(self, a):
        s = self.space
        k = self.chosen[a]
        if k >= 0:
            self.use[s["size"][a], s["slots"][k]] -= s["need"][a]
        self.chosen[a] = -1
        self.day[a] = -1
        return k

    def window(self, a):
        """The days class a may take given the others (None: it cannot be scheduled now)."""
        s = self.space
        predecessor_days = self.day[s["prec"][a]]
        if (predecessor_days < 0).any():
            return None  # a once-off class whose predecessor is unscheduled
        lo = max(s["lo"][a], predecessor_days.max(initial=-1) + 1)
        successor_days = self.day[s["succ"][a]]
        hi = min(s["hi"][a], successor_days[successor_days >= 0].min(initial=10**9) - 1)
        return lo, hi

    def feasible(self, a, rooms=True, precedence=True):
        """Mask over class a's columns that keep precedence and rooms feasible (either one
        alone, as asked), with class a itself taken out first by the caller."""
        s = self.space
        window = self.window(a) if precedence else (0, s["inst"]["days"])
        day = s["class_day"][a]
        if window is None:
            return np.zeros(len(day), bool)
        ok = (day >= window[0]) & (day <= window[1])
        if rooms:
            size = s["size"][a]
            blocked = self.use[size] + s["need"][a] > s["room_cap"][size]
            count = np.zeros(s["T"] + DAY + 1, int)  # blocked slots before each slot
            np.cumsum(blocked, out=count[1 : s["T"] + 1])
            count[s["T"] + 1 :] = count[s["T"]]
            blocked_runs = count[s["class_end"][a]] - count[s["class_start"][a]]
            ok &= (blocked_runs.sum(1) if blocked_runs.shape[1] > 1 else blocked_runs[:, 0]) == 0
        return ok

    def droppable(self, a):
        """A once-off class with no scheduled successor may go unscheduled."""
        return a >= self.space["n_rec"] and (self.day[self.space["succ"][a]] < 0).all()

    def decisions(self):
        """(recurring_start, oneoff_start) in decision form."""
        s = self.space
        starts = np.where(self.chosen >= 0, s["start"][self.chosen], s["T"])
        return starts[: s["n_rec"]], starts[s["n_rec"] :]


def chosen_columns(space, recurring_start, oneoff_start):
    """Decision form -> the column of each class (-1 unscheduled); a start that is not a column
    (a schedule that breaks the start rules) raises ValueError."""
    starts = np.r_[recurring_start, oneoff_start].astype(int)
    chosen = space["column_of"][np.arange(space["n"]), np.clip(starts, 0, space["T"])]
    missing = (chosen < 0) & ((np.arange(space["n"]) < space["n_rec"]) | (starts < space["T"]))
    if missing.any():
        raise ValueError(f"classes {np.flatnonzero(missing).tolist()} start where no column is")
    return chosen


def best_column(schedule, a, cost, rooms=True):
    """Class a's cheapest feasible column and its cost (-1, 0 for leaving a once-off class
    out where that is cheaper or nothing fits; (-1, inf) for a recurring class that fits
    nowhere). Class a must be taken out."""
    ks = schedule.space["by_class"][a]
    ok = schedule.feasible(a, rooms)
    recurring = a < schedule.space["n_rec"]
    best, best_cost = -1, (np.inf if recurring or not schedule.droppable(a) else 0.0)
    if ok.any():
        j = np.argmin(np.where(ok, cost[ks], np.inf))
        if cost[ks[j]] < best_cost:
            best, best_cost = int(ks[j]), float(cost[ks[j]])
    return best, best_cost


def _day_costs(schedule, a, cost):
    """Class a's cheapest column cost on each day among the columns that fit the rooms the
    other classes leave (inf on a day where none does)."""
    s = schedule.space
    ks = s["by_class"][a]
    fits = schedule.feasible(a, precedence=False)
    per_day = np.full(s["inst"]["days"], np.inf)
    np.minimum.at(per_day, s["class_day"][a][fits], cost[ks[fits]])
    return per_day


def place_once_off_exactly(schedule, cost):
    """The once-off classes re-placed by an exact minimum cut: each class's day x_a (or x_a = D,
    unscheduled) minimises the sum of its cheapest column that day, under x_a >= x_p + 1 for
    every predecessor p (capped at D: a class whose predecessor is unscheduled is unscheduled).
    Ishikawa's construction: per class a chain s -> (a, 1) -> ... -> (a, D) -> t whose cut edge
    says its day; a precedence is an uncuttable edge (p, d) -> (a, min(d + 1, D)). Rooms are
    those the recurring classes leave; once-off classes that then clash are placed at their
    cheapest feasible column in precedence order. -> the new cost of the once-off classes."""
    s = schedule.space
    n_rec = s["n_rec"]
    D = s["inst"]["days"]
    oneoff = [a for a in s["order"] if a >= n_rec]
    for a in oneoff:
        schedule.take(a)
    per_day = {a: _day_costs(schedule, a, cost) for a in oneoff}
    finite = np.concatenate([v[np.isfinite(v)] for v in per_day.values()])
    offset = max(0.0, -finite.min(initial=0.0)) + 1.0  # every chain edge's capacity > 0
    node = {a: 1 + i * D for i, a in enumerate(oneoff)}  # node of (a, d) = node[a] + d - 1
    source, sink = 0, 1 + len(oneoff) * D
    tails, heads, capacity = [], [], []

    def edge(u, v, c):
        tails.append(u)
        heads.append(v)
        capacity.append(c)

    for a in oneoff:
        values = np.r_[per_day[a], 0.0]  # x_a = 0..D-1 a day, D unscheduled
        big = np.where(np.isfinite(values), np.round((values + offset) * CENTS), NO_COLUMN)
        chain = [source, *range(node[a], node[a] + D), sink]
        for d in range(D + 1):
            has_predecessor = d == 0 and len(s["prec"][a])
            edge(chain[d], chain[d + 1], CUT_INFINITE if has_predecessor else int(big[d]))
            if 0 < d < D:
                edge(chain[d + 1], chain[d], CUT_INFINITE)
        for p in s["prec"][a]:
            for d in range(1, D + 1):  # x_p >= d  =>  x_a >= min(d + 1, D)
                edge(node[p] + d - 1, node[a] + min(d + 1, D) - 1, CUT_INFINITE)
    n_nodes = sink + 1
    graph = sp.csr_array((np.array(capacity, np.int32), (tails, heads)), shape=(n_nodes, n_nodes))
    graph.sum_duplicates()
    flow = maximum_flow(graph, source, sink, method="dinic").flow
    residual = (graph - flow).tocsr()
    residual.data = (residual.data > 0).astype(np.int8)
    residual.eliminate_zeros()
    reached = np.zeros(n_nodes, bool)
    reached[breadth_first_order(residual, source, return_predecessors=False)] = True
    total = 0.0
    for a in oneoff:  # x_a = how many of its nodes the source side holds
        day = int(reached[node[a] : node[a] + D].sum())
        if day == D:
            continue
        # its cheapest column that day that fits beside the once-off classes placed before it
        ks = s["by_class"][a]
        on_day = schedule.feasible(a) & (s["class_day"][a] == day)
        if on_day.any():
            k = ks[np.argmin(np.where(on_day, cost[ks], np.inf))]
        else:  # the day is full: its cheapest feasible column on any day
            k, _ = best_column(schedule, a, cost)
        if k >= 0:
            schedule.put(a, k)
            total += cost[k]
    return total


def price_greedy(space, cost, fallback):
    """The price-aware constructive heuristic: the recurring classes in precedence order, each
    at its cheapest start that keeps rooms and precedences feasible; then the once-off classes
    by place_once_off_exactly (each where its value beats its cost, its chain's days chosen
    together). A recurring class that fits nowhere -> `fallback` (columns).
    -> (chosen columns, fell back)."""
    schedule = ClassSchedule(space, np.full(space["n"], -1))
    for a in space["order"][: space["n_rec"]]:
        k, _ = best_column(schedule, a, cost)
        if k < 0:
            return np.array(fallback), True
        schedule.put(a, k)
    place_once_off_exactly(schedule, cost)
    return schedule.chosen.copy(), False


def _move_one(schedule, a, cost):
    """Move class a to its cheapest feasible column (or out); True if that lowered the cost."""
    old = schedule.take(a)
    old_cost = cost[old] if old >= 0 else 0.0
    k, new_cost = best_column(schedule, a, cost)
    if new_cost < old_cost - IMPROVE_EPS:
        if k >= 0:
            schedule.put(a, k)
        return True
    if old >= 0:
        schedule.put(a, old)
    return False


def _reinsert(schedule, classes, cost):
    """Put `classes` (taken out) back in precedence order, each at its cheapest feasible column
    -> their total cost, inf if a recurring class fits nowhere."""
    total = 0.0
    for b in sorted(classes, key=schedule.space["rank"].__getitem__):
        k, c = best_column(schedule, b, cost)
        if not np.isfinite(c):
            return np.inf
        if k >= 0:
            schedule.put(b, k)
        total += c
    return total


def _try(schedule, cost, taken, place):
    """Take `taken` out, run place() (which puts classes back and returns their new cost);
    keep the result if the cost fell, else restore -> True if kept."""
    before = schedule.chosen.copy()
    old_cost = sum(cost[before[b]] for b in taken if before[b] >= 0)
    for b in taken:
        schedule.take(b)
    new_cost = place()
    if new_cost < old_cost - IMPROVE_EPS:
        return True
    for b in range(schedule.space["n"]):
        if schedule.chosen[b] != before[b]:
            schedule.take(b)
    for b in range(schedule.space["n"]):
        if schedule.chosen[b] != before[b] and before[b] >= 0:
            schedule.put(b, before[b])
    return False


def _in_way(schedule, a, k):
    """The scheduled classes that share a room size and a slot with class a at column k."""
    s = schedule.space
    others = np.flatnonzero((schedule.chosen >= 0) & (s["size"] == s["size"][a]))
    others = others[others != a]
    columns = schedule.chosen[others]
    theirs = s["run_float"][columns][:, :, None]  # class, run, 1
    mine = s["run_float"][k][None, None, :]  # 1, 1, run
    overlap = (theirs < mine + s["dur"][k]) & (mine < theirs + s["dur"][columns][:, None, None])
    return list(others[overlap.any((1, 2))])


def _eject(schedule, a, cost):
    """Rooms block class a's cheaper starts: put a at one of them, take out the classes in its
    way and put them back at their cheapest feasible columns (a swap when one class blocks)."""
    s = schedule.space
    old = schedule.chosen[a]
    if old < 0:
        return False
    old_cost = cost[old]
    schedule.take(a)
    ks = s["by_class"][a]
    precedence_ok = schedule.feasible(a, rooms=False)
    room_ok = schedule.feasible(a)
    schedule.put(a, old)
    blocked = np.flatnonzero(precedence_ok & ~room_ok & (cost[ks] < old_cost - IMPROVE_EPS))
    targets = blocked[np.argsort(cost[ks[blocked]], kind="stable")][:EJECTION_TARGETS]
    for t, j in enumerate(targets):
        if t > 0 and time.perf_counter() > schedule.deadline:
            return False
        k = ks[j]
        in_way = _in_way(schedule, a, k)

        def place(k=k, in_way=in_way):
            if not schedule.feasible(a)[np.searchsorted(ks, k)]:
                return np.inf
            schedule.put(a, k)
            return cost[k] + _reinsert(schedule, in_way, cost)

        if _try(schedule, cost, [a, *in_way], place):
            return True
    return False


def _place_once_off(schedule, a, cost):
    """All once-off classes re-placed by place_once_off_exactly, kept if that is cheaper (a is
    ignored: one move per pass)."""
    oneoff = list(range(schedule.space["n_rec"], schedule.space["n"]))
    return _try(schedule, cost, oneoff, lambda: place_once_off_exactly(schedule, cost))


def _descendants(space, a):
    """Class a's successors, theirs, and so on."""
    found = []
    todo = list(space["succ"][a])
    while todo:
        b = todo.pop()
        if b not in found:
            found.append(b)
            todo += list(space["succ"][b])
    return found


def _shift_chain(schedule, a, cost, floor):
    """Class a on each of its other days, its descendants then put back at their cheapest
    feasible columns (once-off chains: a root on an early day lets its chain start early). A day
    is skipped where no placement could pay: a's cheapest column that day plus each
    descendant's cheapest column anywhere (`floor`) is no lower than the chain's cost now."""
    s = schedule.space
    chain = [a, *_descendants(s, a)]
    ks = s["by_class"][a]
    now = sum(cost[schedule.chosen[b]] for b in chain if schedule.chosen[b] >= 0)
    days = s["class_day"][a]
    cheapest_per_day = np.full(days.max() + 1, np.inf)
    np.minimum.at(cheapest_per_day, days, cost[ks])
    descendants_floor = floor[chain[1:]].sum()
    cheapest_per_day[schedule.day[a]] = np.inf  # (its day now: not a move)
    hopeful = np.flatnonzero(cheapest_per_day + descendants_floor < now - IMPROVE_EPS)
    for t, d in enumerate(hopeful):
        if t > 0 and time.perf_counter() > schedule.deadline:
            return False

        def place(d=d):
            ok = schedule.feasible(a) & (s["day"][ks] == d)
            if not ok.any():
                return np.inf
            k = ks[np.argmin(np.where(ok, cost[ks], np.inf))]
            schedule.put(a, k)
            return cost[k] + _reinsert(schedule, chain[1:], cost)

        if _try(schedule, cost, chain, place):
            return True
    return False


def improve_python(space, chosen, cost, seconds=None, longest=None):
    """Local improvement of a feasible class schedule (the CSP analogue of knapsack's swaps):
    while a move lowers the cost -- one class to its cheapest feasible start, a once-off class
    added or dropped (_move_one); a class with its precedence descendants on another day
    (_shift_chain); a class onto a start that rooms block, the classes in its way re-placed
    (_eject, a swap when one class blocks) -- make it. Every move keeps the schedule feasible.
    With `seconds`, it ends within that much wall time: a move starts only where the longest
    move of its kind so far still fits before the deadline, and an ejection or a chain shift
    stops between two of its tries once the deadline has passed. longest: {move's name: seconds},
    the longest moves timed so far, updated here (pass one dict for many schedules so that the
    estimates carry over). -> (chosen columns, passes)."""
    started = time.perf_counter()
    deadline = np.inf if seconds is None else started + seconds
    longest = {} if longest is None else longest
    schedule = ClassSchedule(space, chosen)
    schedule.deadline = deadline
    floor = np.array([cost[ks].min() for ks in space["by_class"]])  # each class's cheapest column
    floor[space["n_rec"] :] = np.minimum(floor[space["n_rec"] :], 0.0)  # or left out
    with_successors = [  # (once-off chains: _place_once_off places them all at once)
        a
        for a in space["order"][: space["n_rec"]]
        if 0 < len(_descendants(space, a)) <= CHAIN_LIMIT
    ]
    moves = (  # cheap moves first; their names as csp_op.MOVES gives them
        ("move_one", _move_one, space["order"], ()),
        ("place_once_off", _place_once_off, [space["n_rec"]], ()),
        ("shift_chain", _shift_chain, with_successors, (floor,)),
        ("eject", _eject, space["order"], ()),
    )
    passes = 0
    moved = True
    while moved and passes < MAX_PASSES:
        passes += 1
        moved = False
        for name, move, classes, extra in moves:
            for a in classes:
                before = time.perf_counter()
                if before + longest.get(name, 0.0) > deadline:
                    return schedule.chosen.copy(), passes
                moved |= move(schedule, a, cost, *extra)
                longest[name] = max(longest.get(name, 0.0), time.perf_counter() - before)
    return schedule.chosen.copy(), passes


def improve(space, chosen, cost, seconds=None, longest=None, compiled=None):
    """improve_python, move for move, by the C++ op ldf_ip::csp_improve (csrc/csp_improve.h) where
    it runs here (compiled=None), or as asked (True: the op, False: Python); both keep their
    move-time estimates in `longest` under the same names. -> (chosen columns, passes)."""
    if compiled is None:
        compiled = csp_op.available()
    if not compiled:
        return improve_python(space, chosen, cost, seconds, longest)
    if "packed" not in space:
        space["packed"] = csp_op.pack(space)
    improved, passes = csp_op.improve(
        space["packed"], IMPROVE_SETTINGS, chosen, cost, seconds, longest
    )
    return improved[0], int(passes[0])


# ================================================================ 4.4 evaluate
# improved: improve() to a local optimum; improved-100ms: improve() until the whole pipeline has
# spent SCENARIO_BUDGET a scenario; both with the batteries re-dispatched exactly
DECODES = ("raw", "repaired", "redispatched", "improved-100ms", "improved")
SCENARIO_BUDGET = 0.1  # seconds a scenario: the question users ask of a learned optimiser
HIGHS_LIMITS = (0.1, 0.3, 1.0, 3.0)  # Table 10: HiGHS' wall-clock limits, seconds a scenario
LABEL_GAP = 0.01  # the labels' relative MIP gap (--gap), also HiGHS' in Table 10
THESIS = {"fc": (89.5, 1.136), "ldf": (58.0, 1.177)}  # min-or-capacity % of slots violated, AR


def repair_batteries(states, inst):
    """Forward over the slots: a charge or discharge that would leave [0, cap] becomes idle."""
    states = states.copy()
    step = SLOT_HOURS * inst["m"]
    cap = inst["cap"]
    charge = np.broadcast_to(cap, states.shape[:-1]).astype(float)
    for t in range(states.shape[-1]):
        move = ((states[..., t] == CHARGE) * 1.0 - (states[..., t] == DISCHARGE)) * step
        out_of_bounds = (charge + move < -1e-6) | (charge + move > cap + 1e-6)
        states[..., t][out_of_bounds] = IDLE
        charge = charge + np.where(out_of_bounds, 0.0, move)
    return states


def repair_classes(logits, inst, T, fallback):
    """Greedy in precedence order (recurring classes first, then the most confident class whose
    predecessors are placed): each class at its best allowed start that keeps rooms and
    precedences feasible, else unscheduled -> (recurring_start, oneoff_start, fell back); a
    recurring class that fits nowhere falls back to `fallback`'s classes."""
    n_rec = inst["n_rec"]
    n = len(inst["dur"])
    _, first_monday = weekdays(inst)
    use = np.zeros((2, inst["days"], DAY))  # small and large rooms in use
    room_cap = np.array([inst["n_small"], inst["n_large"]])
    confidence = [np.exp(z.max() - np.logaddexp.reduce(z)) for z in logits]
    start = np.full(n, -1)
    day = np.full(n, -1)
    todo = set(range(n))
    while todo:
        ready = (a for a in todo if not todo & set(inst["prec"][a]))
        a = max(ready, key=lambda a: (a < n_rec, confidence[a]))
        todo.remove(a)
        dur = inst["dur"][a]
        size = inst["large"][a]
        need = inst["rooms"][a]
        allowed = logits[a] > NEG / 2
        predecessor_days = [day[p] + 1 if start[p] >= 0 else np.inf for p in inst["prec"][a]]
        earliest = max(predecessor_days, default=0)
        if a < n_rec:  # rooms in use on each weekday, 9:00-17:00, in its busiest week
            occupied = [
                use[size, first_monday + d :: WEEK_DAYS, NINE:FIVE].max(0, initial=0)
                for d in range(WORKDAYS)
            ]
            occupied = np.stack(occupied)
            n_options = WEEK_OPTIONS
        else:
            occupied = use[size]
            n_options = occupied.shape[1]
        windows = np.lib.stride_tricks.sliding_window_view(occupied, dur, 1)
        fits = windows.max(-1) + need <= room_cap[size]
        grid = np.zeros((len(occupied), n_options), bool)  # (day, option) that fit
        late_enough = np.arange(len(occupied)) >= earliest
        grid[:, : fits.shape[1]] = fits & late_enough[:, None]
        allowed[: grid.size] &= grid.reshape(-1)
        if not allowed.any():  # a recurring class fits nowhere
            return fallback[0], fallback[1], True
        s = int(np.argmax(np.where(allowed, logits[a], -np.inf)))
        if a < n_rec:
            start[a] = s
            day[a] = s // WEEK_OPTIONS
            first_slot = NINE + s % WEEK_OPTIONS
            use[size, first_monday + day[a] :: WEEK_DAYS, first_slot : first_slot + dur] += need
        elif s < T:
            start[a] = s
            day[a] = s // DAY
            use[size, day[a], s % DAY : s % DAY + dur] += need
    oneoff_start = np.where(start[n_rec:] < 0, T, start[n_rec:])
    return start[:n_rec], oneoff_start, False


def repaired_decode(out, ds):
    """Classes by repair_classes, batteries by repair_batteries of the argmax states ->
    (recurring_start, oneoff_start, battery_state, fell back)."""
    T = ds["price"].shape[1]
    recurring, oneoff, fell_back = [], [], []
    recurring_logits = out["recurring_start"].double().numpy()
    oneoff_logits = out["oneoff_start"].double().numpy()
    for r, o in zip(recurring_logits, oneoff_logits, strict=True):
        rec, one, fell = repair_classes(list(r) + list(o), ds["inst"], T, ds["fallback"])
        recurring.append(rec)
        oneoff.append(one)
        fell_back.append(fell)
    battery = repair_batteries(raw_decode(out)[2], ds["inst"])
    return np.array(recurring), np.array(oneoff), battery, np.array(fell_back)


def redispatched_batteries(ds, rows):
    """The batteries dispatched exactly (DP) given each row's price: (rows, batteries, slots)."""
    inst = ds["inst"]
    cost_per_kw = SLOT_MWH_PER_KW * ds["price"][rows]
    states = [
        battery_dispatch_batch(cost_per_kw, inst["cap"][b], inst["m"][b], inst["eff"][b])[1]
        for b in range(len(inst["cap"]))
    ]
    return np.stack(states, 1)


def improved_classes(space, costs, recurring_start, oneoff_start, seconds=None):
    """improve() of each row's class schedule under its column costs; with `seconds`, each row's
    improvement (its conversions included) ends within that budget, the move-time estimates
    carried from row to row. -> (recurring_start, oneoff_start, seconds per row) arrays."""
    recurring, oneoff, row_seconds = [], [], []
    longest = {}
    for cost, rec, one in zip(costs, recurring_start, oneoff_start, strict=True):
        started = time.perf_counter()
        chosen = chosen_columns(space, rec, one)
        left = None if seconds is None else seconds - (time.perf_counter() - started)
        chosen, _ = improve(space, chosen, cost, left, longest)
        rec, one = ClassSchedule(space, chosen).decisions()
        recurring.append(rec)
        oneoff.append(one)
        row_seconds.append(time.perf_counter() - started)
    return np.array(recurring), np.array(oneoff), np.array(row_seconds)


def evaluate(ds, checkpoints, bf16=False, decodes=DECODES):
    """Tables 7-9 on the test split per checkpoint, for the raw argmax, the repaired decode, the
    repaired classes with the batteries re-dispatched, and those classes improved (improve),
    with times per instance."""
    rows = ds["split"]["test"]
    mip = build_mip(ds["inst"], ds["base"], ds["solar"])
    space = schedule_space(mip)
    t_start = time.perf_counter()
    costs = column_costs(mip, ds["price"][rows])  # (what the improved decodes need)
    costs_seconds = time.perf_counter() - t_start
    t_start = time.perf_counter()
    redispatched = redispatched_batteries(ds, rows)
    dispatch_seconds = time.perf_counter() - t_start
    results = {}
    for name, path in checkpoints.items():
        ck = load_csp_checkpoint(path)
        if trained_on(ck, ds["index"][rows]):
            raise SystemExit(
                f"{path} was trained on test scenarios (or predates their record): retrain it"
            )
        model = checkpoint_model(ds, ck, path)
        x = inputs(ds, ck["norm"])[rows]
        if bf16:
            model = model.bfloat16()
        predict(model, x, batch=len(rows))  # warm-up at the timed shape
        t_start = time.perf_counter()
        out = predict(model, x, batch=len(rows))
        t_predicted = time.perf_counter()
        recurring_start, oneoff_start, battery_state, fell_back = repaired_decode(out, ds)
        t_repaired = time.perf_counter()
        schedules = {
            "raw": raw_decode(out),
            "repaired": (recurring_start, oneoff_start, battery_state),
            "redispatched": (recurring_start, oneoff_start, redispatched),
        }
        seconds = {
            "raw": t_predicted - t_start,
            "repaired": t_repaired - t_start,
            "redispatched": t_repaired - t_start + dispatch_seconds,
        }
        before_improving = seconds["redispatched"] + costs_seconds
        spent = before_improving / len(rows)  # a scenario's network, repair, DP, column costs
        budgets = (("improved-100ms", max(SCENARIO_BUDGET - spent, 0.0)), ("improved", None))
        slowest = {}  # decode -> the slowest scenario's seconds
        for decode, budget in budgets:
            if decode in decodes:
                t_improve = time.perf_counter()
                *improved, row_seconds = improved_classes(
                    space, costs, recurring_start, oneoff_start, budget
                )
                schedules[decode] = (*improved, redispatched)
                seconds[decode] = before_improving + time.perf_counter() - t_improve
                slowest[decode] = spent + row_seconds.max()
        result = {}
        for decode in decodes:
            ms = seconds[decode] * 1000 / len(rows)
            result[decode] = {**evaluate_schedules(ds, rows, schedules[decode]), "ms": ms}
            if decode in slowest:
                result[decode]["ms_max"] = slowest[decode] * 1000
        result["fallbacks"] = int(fell_back.sum())
        result["solver_s"] = ds["seconds"][rows].mean()
        result["n_test"] = len(rows)
        result["epoch"] = ck["epoch"]
        result["n_train"] = len(ds["split"]["train"])
        precision = "bf16" if bf16 else "fp32"
        result["inference"] = f"{precision}, {torch.get_num_threads()} thread(s)"
        results[name] = result
    return results


def no_learning(ds, highs_limits=HIGHS_LIMITS, gap=LABEL_GAP):
    """Table 10's rows that need no training, on the test split, through the same checker: the
    price-aware greedy and greedy + improve (batteries by the exact DP), HiGHS under each
    wall-clock limit (its best schedule, or none), and the label itself."""
    rows = ds["split"]["test"]
    inst = ds["inst"]
    mip = build_mip(inst, ds["base"], ds["solar"])
    space = schedule_space(mip)
    fallback = chosen_columns(space, *ds["fallback"])
    t_start = time.perf_counter()
    costs = column_costs(mip, ds["price"][rows])
    batteries = redispatched_batteries(ds, rows)
    shared_seconds = time.perf_counter() - t_start  # costs and batteries: every row needs them
    shared = shared_seconds / len(rows)  # a scenario's share
    greedy, fell_back, greedy_seconds = [], 0, []
    for cost in costs:
        t_start = time.perf_counter()
        chosen, fell = price_greedy(space, cost, fallback)
        greedy_seconds.append(time.perf_counter() - t_start)
        fell_back += fell
        greedy.append(chosen)
    runs = [("greedy", greedy, np.array(greedy_seconds))]
    for method, budget in (
        ("greedy + improve, 100 ms", SCENARIO_BUDGET),
        ("greedy + improve", None),
    ):
        longest = {}  # the move-time estimates, carried from scenario to scenario
        improved, row_seconds = [], []
        for chosen, cost, before in zip(greedy, costs, greedy_seconds, strict=True):
            left = None if budget is None else max(budget - shared - before, 0.0)
            t_start = time.perf_counter()
            improved.append(improve(space, chosen, cost, left, longest)[0])
            row_seconds.append(before + time.perf_counter() - t_start)
        runs.append((method, improved, np.array(row_seconds)))
    table = {}
    for method, chosen, row_seconds in runs:
        schedules = [ClassSchedule(space, columns).decisions() for columns in chosen]
        recurring, oneoff = (np.array(part) for part in zip(*schedules, strict=True))
        stats = evaluate_schedules(ds, rows, (recurring, oneoff, batteries))
        ms = (row_seconds.mean() + shared) * 1000
        ms_max = (row_seconds.max() + shared) * 1000
        table[method] = {**stats, "ms": ms, "ms_max": ms_max, "found_pct": 100.0}
        table[method]["fallbacks"] = fell_back
    for limit in highs_limits:
        found, schedules, seconds = [], [], 0.0
        for j, i in enumerate(rows):
            t_start = time.perf_counter()
            try:
                label = solve_highs(mip, ds["price"][i], gap=gap, time_limit=limit)
            except SolverError:
                label = None
            seconds += time.perf_counter() - t_start
            if label is not None:
                found.append(j)
                schedules.append(tuple(label[key] for key in DECISION_KEYS))
        name = f"HiGHS {limit:g} s"
        table[name] = {"ms": seconds * 1000 / len(rows), "found_pct": 100 * len(found) / len(rows)}
        if found:
            decisions = tuple(np.array(part) for part in zip(*schedules, strict=True))
            table[name].update(evaluate_schedules(ds, rows[found], decisions))
    labels = tuple(ds[key][rows] for key in DECISION_KEYS)
    label_ms = 1000 * ds["seconds"][rows].mean()
    table["MIP label (1 % gap)"] = {
        **evaluate_schedules(ds, rows, labels),
        "ms": label_ms,
        "found_pct": 100.0,
    }
    return table


def table10(results, baselines, n_test):
    """Table 10 as markdown: every method and decode on the controllable cost, $ above the
    label, feasibility and time; rows sorted by time."""
    rows = [(name, scores) for name, scores in baselines.items()]
    for name, result in results.items():
        for decode in ("redispatched", "improved-100ms", "improved"):
            if decode in result:
                rows.append((f"{name} network, {decode}", result[decode]))
    rows.sort(key=lambda row: row[1]["ms"])
    first = next(iter(baselines.values()))
    lines = [
        f"Table 10: schedules on the controllable cost, {n_test} test instances\n",
        "| method | AR on the controllable cost | $ above the label: mean | p95 | max | "
        "schedule found % | feasible % (of found) | ms / scenario: mean (max) |",
        "|" + "---|" * 8,
    ]
    for name, s in rows:
        if "ar_controllable" not in s:
            lines.append(f"| {name} | none | | | | {s['found_pct']:.0f} | | {s['ms']:.1f} |")
            continue
        ms = f"{s['ms']:.1f}" + (f" (max {s['ms_max']:.1f})" if "ms_max" in s else "")
        lines.append(
            f"| {name} | {s['ar_controllable']:.3f} | {s['excess_mean']:.1f} | "
            f"{s['excess_p95']:.1f} | {s['excess_max']:.1f} | {s.get('found_pct', 100.0):.0f} | "
            f"{s['feasible_pct']:.0f} | {ms} |"
        )
    lines.append(
        f"\nAR on the controllable cost = 1 + mean $ above the label / "
        f"{first.get('controllable_mean', float('nan')):.1f} $ (the mean |label - fixed cost|); "
        "HiGHS rows: over the scenarios where it found a schedule in time. Every schedule's "
        "batteries are dispatched exactly (DP); ms include that and the column costs (the "
        "networks' and the DP's time shared out over the batch); max: the slowest scenario."
    )
    return "\n".join(lines)


def table10_figure(results, baselines, path):
    """Table 10's controllable AR against ms per scenario (log scale), one point per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [(name, s) for name, s in baselines.items() if "ar_controllable" in s]
    for name, result in results.items():
        decodes = ("redispatched", "improved-100ms", "improved")
        points += [(f"{name} {d}", result[d]) for d in decodes if d in result]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, s in points:
        ax.scatter(s["ms"], s["ar_controllable"])
        ax.annotate(name, (s["ms"], s["ar_controllable"]), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("ms per scenario (log)")
    ax.set_ylabel("AR on the controllable cost")
    ax.set_title("CSP test scenarios: quality against time")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(results):
    """Tables 7 (% of constraint instances violated), 8 (violation degree) and 9 (AR,
    feasibility, time) as markdown."""
    rows = [
        (f"{name} | {decode}", r[decode])
        for name, r in results.items()
        for decode in DECODES
        if decode in r
    ]
    with_thesis = sorted(set(results) & set(THESIS))
    family_head = (
        "| model | decode | " + " | ".join(FAMILIES) + " |\n|" + "---|" * (len(FAMILIES) + 2)
    )

    def family_rows(first, second, fmt):
        lines = []
        for label, scores in rows:
            cells = [f"{v[first]:{fmt}} / {v[second]:{fmt}}" for v in scores["fam"].values()]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        return lines

    table7 = [
        "Table 7: % of constraint instances violated, mean / max over test instances\n",
        family_head,
        *family_rows("pct_mean", "pct_max", ".1f"),
        *[f"| {name} (thesis) | raw | | | {THESIS[name][0]} / | | | |" for name in with_thesis],
    ]
    table8 = [
        "\nTable 8: violation degree, mean / average of each instance's max\n",
        family_head,
        *family_rows("degree_mean", "degree_avg_max", ".3g"),
    ]
    first = next(iter(results.values()))
    first_decode = next(first[decode] for decode in DECODES if decode in first)
    table9 = [
        f"\nTable 9: approximation ratio (eq. 17), feasibility and time, {first['n_test']} test "
        "instances\n",
        "| model | decode | AR mean | AR max | AR min | $ above the label, mean | AR on the "
        "controllable cost | feasible % | ms / instance (batched, CPU) |\n|" + "---|" * 9,
    ]
    for label, scores in rows:
        ratios = " | ".join(f"{scores[c]:.4f}" for c in ("ar_mean", "ar_max", "ar_min"))
        controllable = f"{scores['excess_mean']:.1f} | {scores['ar_controllable']:.2f}"
        table9.append(
            f"| {label} | {ratios} | {controllable} | {scores['feasible_pct']:.0f} | "
            f"{scores['ms']:.1f} |"
        )
    table9 += [f"| {name} (thesis) | raw | {THESIS[name][1]} | | | | | | |" for name in with_thesis]
    table9.append(
        f"\nControllable cost: the total less the base load net of solar, which no decision "
        f"moves; its mean size over these test labels is {first_decode['controllable_mean']:.1f} $ "
        "(|label - fixed|). AR on it = 1 + mean $ above the label / that mean size."
    )
    selected = ", ".join(f"{k} {v['epoch']}, {v['fallbacks']}" for k, v in results.items())
    footer = (
        f"\n{first['n_train']} training / {first['n_test']} test labels; "
        f"solver {first['solver_s']:.1f} s per test label; inference {first['inference']}; "
        "selected epoch and repairs that fell back to the reference label's classes: " + selected
    )
    return "\n".join([*table7, *table8, *table9, footer])


def run(args, ds):
    """Train, copy the selected checkpoint to --save (default <model>.pt), evaluate it on the
    test split."""
    run_dir = Path(args.out or f"runs/csp-{args.model}")
    save = Path(args.save or f"{args.model}.pt")
    with common.folder_lock(run_dir, "this run folder"):  # a second run waits for the first
        selected = train(args, ds, run_dir)
    atomic_write_bytes(save, selected.read_bytes())
    results = evaluate(ds, {args.model: save}, args.bf16, args.decode)
    atomic_write_json(run_dir / "results.json", results)
    atomic_write_bytes(run_dir / "results.md", markdown(results).encode())
    print(f"saved {save}\n{markdown(results)}")
    return results


# ================================================================ labels from a network's start
START_BATCH = 32  # --start-from: the scenarios the network predicts at once
START_HASH_CHARS = 16  # the checkpoint's SHA-256 in a label's start name, shortened as price_hash


class NetworkStarts:
    """--start-from CHECKPOINT: generate_labels' starts. Each scenario's MIP starts from the
    network's classes for it, repaired (repaired_decode; where a recurring class fits nowhere, the
    reference label's classes) and improved to a local optimum under its column costs
    (improved_classes), as bench/csp_warmstart.py makes them; START_BATCH scenarios predicted at
    once. The network stays in this process (only the starts go to Dask's workers). A label made
    from it records the start's name: the checkpoint's file name and its SHA-256's first
    START_HASH_CHARS hex digits ("fc.pt:0123456789abcdef")."""

    def __init__(self, path, inst, base, solar, price):
        """Read the checkpoint: one sentence naming the file where it is missing, corrupt, of
        another problem (load_csp_checkpoint) or of another instance (checkpoint_model)."""
        checkpoint = load_csp_checkpoint(path, "checkpoint (--start-from)")
        real = dict(inst=inst, base=base, solar=solar, price=np.atleast_2d(price))
        self.model = checkpoint_model(real, checkpoint, path)
        self.norm = checkpoint["norm"]
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        self.name = f"{Path(path).name}:{digest[:START_HASH_CHARS]}"

    def schedules(self, mip, space, prices, fallback):
        """The improved network schedules of the price scenarios `prices` (scenarios, slots) ->
        (recurring_start, oneoff_start) arrays, a row a scenario; `fallback`: the reference
        label's classes (recurring_start, oneoff_start)."""
        inst = mip["inst"]
        scenarios = dict(inst=inst, base=mip["base"], solar=mip["solar"], price=prices)
        scenarios["fallback"] = fallback
        out = predict(self.model, inputs(scenarios, self.norm), batch=START_BATCH)
        recurring, oneoff, _, _ = repaired_decode(out, scenarios)
        costs = column_costs(mip, prices)
        recurring, oneoff, _ = improved_classes(space, costs, recurring, oneoff)
        return recurring, oneoff

    def __call__(self, cfg, todo):
        """Yield (i, start) for the scenarios `todo` of the label set `cfg`, in their order, a
        batch of START_BATCH at a time as they are asked for."""
        mip = label_mip(cfg)
        space = schedule_space(mip)
        reference = cfg["reference"]
        fallback = (reference["recurring_start"], reference["oneoff_start"])
        for first in range(0, len(todo), START_BATCH):
            batch = todo[first : first + START_BATCH]
            prices = [price_scenario(cfg["parts"], cfg["block"], cfg["seed"], i)[0] for i in batch]
            recurring, oneoff = self.schedules(mip, space, np.stack(prices), fallback)
            for i, rec, one in zip(batch, recurring, oneoff, strict=True):
                yield i, dict(recurring_start=rec, oneoff_start=one, start=self.name)


# ================================================================ command line
def positive_int_list(text):
    """'64,128,64' -> (64, 128, 64), each > 0."""
    try:
        values = tuple(int(x) for x in text.split(","))
    except ValueError:
        values = ()
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive integers, got {text!r}"
        )
    return values


int_list = positive_int_list  # (the name bench/csp_heads.py uses)


EPILOG = """examples (see README):
  python csp_ldf.py --mode labels --instances 1000 --workers 2
  python csp_ldf.py --mode labels --instances 3000 --start-from fc.pt   # warm-started by a network
  python csp_ldf.py --model fc; python csp_ldf.py --pretrained fc.pt
  python csp_ldf.py --mode evaluate --checkpoints fc=fc.pt ldf=ldf.pt   # Tables 7-9"""

# the networks' numeric options: name, type, default, help
STEP = 1e-3  # the thesis' subgradient step of lambda_b (eq. 20)
PER_INSTANCE_DUALS = ("per-instance", "augmented")  # one lambda_i per training scenario
NETWORK_OPTIONS = (
    ("epochs", positive_int, 30, ""),
    ("patience", positive_int, 10, "epochs without a better selection value"),
    ("batch-size", positive_int, 16, ""),
    ("lr", positive_float, 1e-3, "Adam (thesis 1e-3)"),
    ("step", nonnegative_float, STEP, "subgradient step of lambda_b, eq. 20 (thesis 1e-3)"),
    ("lambda0", nonnegative_float, 0.0, "initial lambda_b"),
    ("max-grad-norm", nonnegative_float, 1.0, "gradient clipping (thesis 1; 0 = off)"),
    ("k", positive_float, 20.0, "sharpness of the one-hot surrogate, eq. 16"),
    ("mu", nonnegative_float, 1.0, "mu of the LDF selection mu-loss, eq. 15"),
    ("threads", nonnegative_int, 0, "torch threads (0: the cores this process may use)"),
    ("conv", positive_int_list, "64,128,64", "conv channels"),
    ("kernels", positive_int_list, "8,5,3", "as the thesis code"),
    ("pool", positive_int, 32, "max-pool width"),
    ("mixer", positive_int_list, "2048,1024", "mixer widths"),
    ("head", positive_int_list, "512,256", "head widths"),
)


MODES = ("train", "evaluate", "labels", "validate", "figure2", "upgrade-dataset")
SOLVING = ("labels", "validate")
READING_LABELS = ("train", "evaluate")
WITH_INSTANCE = ("train", "evaluate", "labels", "validate", "upgrade-dataset")
# the modes in which each option does something (an option not listed: every mode); another
# mode given it is an error, not an option silently ignored
OPTION_MODES = {
    **{name.replace("-", "_"): ("train",) for name, *_ in NETWORK_OPTIONS},
    "instance": WITH_INSTANCE,
    "loads": WITH_INSTANCE,
    "block": (*READING_LABELS, "labels", "figure2", "upgrade-dataset"),
    "seed": (*READING_LABELS, "labels", "figure2", "upgrade-dataset"),
    "max_labels": READING_LABELS,
    "labels_dir": (*READING_LABELS, "labels"),
    "dataset": (*READING_LABELS, "labels", "upgrade-dataset"),
    "cluster": ("labels",),
    "instances": ("labels",),
    "workers": ("labels",),
    "shard": ("labels",),
    "start_from": ("labels",),
    "solver": SOLVING,
    "gap": SOLVING,
    "time_limit": SOLVING,
    "solver_threads": SOLVING,
    "model": ("train",),
    "dual": ("train",),
    "rho": ("train",),
    "dual_lr": ("train",),
    "pretrained": ("train",),
    "save": ("train",),
    "fresh": ("train",),
    "out": READING_LABELS,
    "checkpoints": ("evaluate",),
    "decode": READING_LABELS,
    "highs_limits": ("evaluate",),
    "bf16": READING_LABELS,
    "threads": READING_LABELS,
}
LDF_ONLY = ("step", "lambda0", "k", "mu", "dual", "rho", "dual_lr")  # fc: no multiplier, no nu_b
SERIES_SLOTS = NOVEMBER_DAYS * DAY  # the networks' input length
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C


def flag(dest):
    """time_limit -> --time-limit."""
    return "--" + dest.replace("_", "-")


def check_args(p, args, given):
    """argparse errors for flags that do nothing in the chosen mode or model and for values that
    cannot work, before any data is read."""
    unused = sorted(flag(d) for d in given if args.mode not in OPTION_MODES.get(d, MODES))
    if unused:
        them = "it" if len(unused) == 1 else "them"
        p.error(f"--mode {args.mode} does not use {', '.join(unused)}: drop {them}")
    try:
        args.shard = tuple(int(x) for x in args.shard.split("/"))
        valid_shard = len(args.shard) == 2 and 0 <= args.shard[0] < args.shard[1]
    except ValueError:
        valid_shard = False
    if not valid_shard:
        p.error(f"--shard: expected k/n with 0 <= k < n, got {args.shard!r}")
    if len(args.conv) != len(args.kernels):
        p.error(f"--conv {args.conv} and --kernels {args.kernels} need as many values")
    if len(args.head) != 2:
        p.error(f"--head: expected two widths, got {args.head}")
    length = SERIES_SLOTS - sum(k - 1 for k in args.kernels)
    if length < 1:
        p.error(f"--kernels {args.kernels}: wider than the series ({SERIES_SLOTS} slots)")
    if args.pool > length:
        p.error(
            f"--pool {args.pool}: wider than the series after the convolutions ({length} slots)"
        )
    model = args.model or ("ldf" if args.pretrained else "fc")
    ldf_only = sorted(flag(d) for d in given & set(LDF_ONLY))
    if args.mode == "train" and model == "fc" and ldf_only:
        p.error(f"{', '.join(ldf_only)}: the LDF model's settings; the fc model has no multiplier")
    if "rho" in given and args.dual != "augmented":
        p.error("--rho is the augmented Lagrangian's penalty: add --dual augmented")
    if "dual_lr" in given and args.dual != "dual-net":
        p.error("--dual-lr trains the dual network: add --dual dual-net")
    if args.dual in PER_INSTANCE_DUALS and "step" not in given:
        args.step = None  # train(): STEP x the training scenarios
    architecture = sorted(flag(d) for d in given & set(ARCH))
    if args.pretrained and architecture:
        p.error(
            "--pretrained takes the architecture from its checkpoint: "
            f"drop {', '.join(architecture)}"
        )
    if args.pretrained and not os.path.isfile(args.pretrained):
        p.error(
            f"--pretrained: no such file {args.pretrained}; make the FC network first: "
            f"python csp_ldf.py --model fc --save {args.pretrained}"
        )
    if args.start_from and not os.path.isfile(args.start_from):
        p.error(
            f"--start-from: no such file {args.start_from}; give a CSP checkpoint of this "
            "instance, e.g. fc.pt (python csp_ldf.py --model fc)"
        )
    if args.start_from and args.solver == "gurobi":
        p.error("--start-from warm-starts HiGHS; --solver gurobi takes no start: drop one")
    for named in args.checkpoints:
        name, _, path = named.partition("=")
        if not name or not path:
            p.error(f"--checkpoints: expected name=path, got {named!r}")
        if args.mode == "evaluate" and not os.path.isfile(path):
            p.error(f"--checkpoints {named}: no such file {path}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawTextHelpFormatter,
        epilog=EPILOG,
    )
    p.add_argument(
        "--mode",
        choices=MODES,
        default="train",
        help="train (default), evaluate, labels, validate (the MIP on the real prices), figure2,\n"
        "upgrade-dataset (store a format-1 dataset's STL parts and provenance)",
    )
    d = p.add_argument_group("data (thesis 4.1-4.2)")
    d.add_argument(
        "--data-dir",
        help="challenge data (default: $CSP_DATA_DIR, else datasets/ieee_cis)",
    )
    d.add_argument(
        "--instance", default="phase2_instance_small_0", help="instance file name without .txt"
    )
    d.add_argument(
        "--loads",
        choices=["forecast", "actual"],
        default="forecast",
        help="base load and solar: the thesis' forecasts (default: its inputs and results) "
        "or actual values",
    )
    d.add_argument(
        "--block",
        type=positive_int,
        default=DAY,
        help="residual block in slots (default 96 = a day)",
    )
    d.add_argument(
        "--seed",
        type=nonnegative_int,
        default=0,
        help="scenario seed (scenario i uses (seed, i)); also split and init",
    )
    d.add_argument(
        "--max-labels", type=positive_int, help="only the labels of scenarios 0..N-1 (fixed splits)"
    )
    s = p.add_argument_group("labels (thesis 4.1 MIP)")
    s.add_argument(
        "--instances", type=positive_int, default=1000, help="scenarios to label (default 1000)"
    )
    s.add_argument(
        "--workers",
        type=positive_int,
        default=2,
        help="solver processes of the local Dask cluster (default 2; 1: solve in this process)",
    )
    s.add_argument(
        "--cluster",
        help="address of a running Dask scheduler (default $LDF_DASK_SCHEDULER, else a local\n"
        "cluster of --workers processes), e.g. tcp://10.0.0.5:8786; see README (SLURM)",
    )
    s.add_argument(
        "--shard", default="0/1", help="k/n: label only scenarios i with i %% n == k (job arrays)"
    )
    s.add_argument(
        "--labels-dir",
        default="data/csp_labels",
        help="folder of new labels (default data/csp_labels)",
    )
    s.add_argument(
        "--dataset",
        default=DATASET_FOLDER,
        help=f"label dataset kept in the repository, read first (default {DATASET_FOLDER});\n"
        "complete shards of new labels are added to it",
    )
    s.add_argument(
        "--start-from",
        metavar="CKPT",
        help="a CSP checkpoint of this instance, e.g. fc.pt: each label's MIP starts from\n"
        "the network's schedule, repaired and improved (default: the reference label's);\n"
        "each label records its start",
    )
    s.add_argument(
        "--solver", choices=["highs", "gurobi"], default="highs", help="gurobi falls back to HiGHS"
    )
    s.add_argument(
        "--gap",
        type=nonnegative_float,
        default=0.01,
        help="relative MIP gap (default 0.01, as the thesis)",
    )
    s.add_argument(
        "--time-limit", type=positive_float, default=300.0, help="seconds per label (default 300)"
    )
    s.add_argument(
        "--solver-threads",
        type=positive_int,
        default=1,
        help="solver threads per worker (default 1)",
    )
    t = p.add_argument_group("networks (thesis 4.3-4.4)")
    t.add_argument(
        "--model", choices=["fc", "ldf"], help="fc (default) or ldf (the default with --pretrained)"
    )
    t.add_argument(
        "--pretrained",
        help="checkpoint to start from, e.g. fc.pt (its architecture and normalisation)",
    )
    t.add_argument("--save", help="the selected checkpoint (default <model>.pt)")
    t.add_argument(
        "--out", help="run folder: last.pt, best_*.pt, results.{json,md} (default runs/csp-<model>)"
    )
    t.add_argument(
        "--fresh", action="store_true", help="start over instead of resuming <out>/last.pt"
    )
    t.add_argument(
        "--checkpoints",
        nargs="+",
        default=["fc=fc.pt", "ldf=ldf.pt"],
        help="--mode evaluate: name=path",
    )
    for name, kind, default, what in NETWORK_OPTIONS:
        t.add_argument(
            f"--{name}",
            type=kind,
            default=kind(str(default)),
            help=f"{what} (default {default})".lstrip(),
        )
    t.add_argument(
        "--dual",
        choices=common.DUALS,
        default="scalar",
        help="LDF's multipliers: scalar (the thesis' one lambda_b, default); per-instance (one\n"
        "lambda_i per training scenario, raised by its own violation; --step default: 1e-3 x\n"
        "the training scenarios); augmented (the same, plus rho/2 nu^2 in the loss and steps of\n"
        "rho); dual-net (a network maps the scenario's input series to lambda; primal-dual)",
    )
    t.add_argument(
        "--rho",
        type=positive_float,
        help="--dual augmented: the penalty rho, also the multipliers' step (default: --step)",
    )
    t.add_argument(
        "--dual-lr",
        type=positive_float,
        default=common.DUAL_NET_LR,
        help=f"--dual dual-net: Adam learning rate of the dual network (default "
        f"{common.DUAL_NET_LR:g})",
    )
    t.add_argument(
        "--decode",
        nargs="+",
        choices=DECODES,
        default=list(DECODES),
        help="the networks' decodes in the tables: raw argmax, repaired, repaired with the "
        "batteries\nre-dispatched exactly, and those improved by local search (default: all)",
    )
    t.add_argument(
        "--highs-limits",
        nargs="*",
        type=positive_float,
        default=list(HIGHS_LIMITS),
        help="--mode evaluate, Table 10: HiGHS' wall-clock limits in seconds a scenario "
        "(default 0.1 0.3 1 3;\nnone given: no HiGHS rows)",
    )
    t.add_argument(
        "--bf16",
        action="store_true",
        help="inference (validation, tables) with bfloat16 weights: fast on\n"
        "CPUs with AMX (oneDNN); training stays float32",
    )
    args = p.parse_args(argv)
    given = common.given_options(p, argv)
    check_args(p, args, given)
    if args.model is None:
        args.model = "ldf" if args.pretrained else "fc"
    return args


def run_mode(args):
    data = find_data_dir(args.data_dir)
    price = read_price(data)
    if args.mode == "figure2":
        figure2(price, args.block, args.seed)
        return
    instance_path = data / "instances" / f"{args.instance}.txt"
    if not instance_path.is_file():
        names = ", ".join(sorted(path.stem for path in (data / "instances").glob("*.txt")))
        raise SystemExit(f"--instance {args.instance}: no {instance_path} (there: {names})")
    inst = read_instance(instance_path)
    base, solar = read_loads(data, args.loads)
    loads_file = data_file(data, FORECAST_FILE if args.loads == "forecast" else ACTUAL_FILE)
    raw_files = raw_file_hashes(data, [instance_path, data_file(data, PRICE_FILE), loads_file])
    solve_kw = dict(
        solver=args.solver, gap=args.gap, time_limit=args.time_limit, threads=args.solver_threads
    )
    name = f"{inst['name']}-{args.loads}-block{args.block}-seed{args.seed}"
    labels = Path(args.labels_dir) / name
    dataset = Path(args.dataset) / name
    if args.mode in READING_LABELS:
        ds = load_dataset(
            inst, base, solar, labels, args.seed, args.max_labels, price, dataset=dataset
        )
    if args.mode == "train":
        run(args, ds)
    elif args.mode == "evaluate":
        checkpoints = dict(c.split("=", 1) for c in args.checkpoints)
        results = evaluate(ds, checkpoints, args.bf16, args.decode)
        baselines = no_learning(ds, args.highs_limits)
        out = Path(args.out or "runs/csp")
        tables = markdown(results) + "\n\n" + table10(results, baselines, len(ds["split"]["test"]))
        atomic_write_json(out / "tables.json", results)
        atomic_write_json(out / "table10.json", baselines)
        atomic_write_bytes(out / "tables.md", tables.encode())
        table10_figure(results, baselines, out / "table10.png")
        print(tables)
    elif args.mode == "upgrade-dataset":
        settings = read_manifest(dataset).get("solve", solve_kw)
        fingerprint = label_fingerprint(inst, base, solar, price, args.seed, args.block, settings)
        checked = upgrade_dataset(dataset, fingerprint, price, raw_files)
        if checked:
            print(f"{dataset}: format {MANIFEST_FORMAT}, {checked} scenarios checked")
    elif args.mode == "validate":  # the MIP on the real prices, against the thesis on small_0
        label = solve(build_mip(inst, base, solar), price, **solve_kw)
        print(
            f"{inst['name']}: {label['objective']:.2f} ({label['solver']}, "
            f"gap {100 * label['gap']:.2f}%, {label['seconds']:.0f} s); "
            f"thesis on small_0: {THESIS_SMALL0} (Gurobi, gap 0.88%; must be within 1%)"
        )
    else:
        starts = None
        if args.start_from:  # read before any solve, so that a bad checkpoint stops at once
            starts = NetworkStarts(args.start_from, inst, base, solar, price)
        summary = generate_labels(
            inst,
            base,
            solar,
            price,
            labels,
            args.instances,
            seed=args.seed,
            block=args.block,
            workers=args.workers,
            shard=args.shard,
            dataset=dataset,
            cluster=args.cluster,
            loads=args.loads,
            raw_files=raw_files,
            starts=starts,
            **solve_kw,
        )
        print(summary_text(summary))
        print(json.dumps(summary, default=float))


def main(argv=None):
    args = parse_args(argv)
    set_seed(args.seed)
    common.set_threads(args.threads or None)  # as knapsack_ldf.py: 0 = the cores it may use
    try:
        run_mode(args)
    except (InputError, SolverError) as err:
        raise SystemExit(str(err)) from None


def exit_interrupted():
    """Ctrl-C: exit at once with the shell's code for it. os._exit, not sys.exit: a HiGHS thread
    that has not reached its next interrupt check yet must not hold up (or upset) the exit; every
    file was written atomically, and a later run removes the temporaries of cut-off writes."""
    print("csp_ldf.py: interrupted (Ctrl-C)", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_INTERRUPTED)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        exit_interrupted()
