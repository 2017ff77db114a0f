"""Test set-up: the top-level scripts (common.py, knapsack_ldf.py, csp_ldf.py) importable from the
tests; the CSP fixtures."""

import gzip
import itertools
import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# ---------------------------------------------------------------- CSP (csp_ldf.py) fixtures
CSP_DATA = Path(__file__).resolve().parents[1] / "datasets/ieee_cis"  # committed with the code
# The thesis' own MIP results stay out of the repository; the one test that compares with them
# reads them from the shared data folder beside the checkout where it exists.
THESIS_RESULTS = Path(__file__).resolve().parents[2] / "shared/data/ieee_cis/thesis_mip_results"

# two days (Monday, Tuesday); 1 small + 1 large room; one battery of 3 charge levels (step 10 kWh)
CSP_TINY = """ppoi 1 1 1 2 2
b 0 1 1
s 0 0
c 0 0 30 40 0.81
r 0 1 S 30 28 0
r 1 1 L 20 30 1 0
a 0 1 S 10 88 100 50 0
a 1 1 L 40 90 80 20 1 0
"""


@pytest.fixture(scope="session")
def csp_data():
    """The IEEE-CIS challenge data folder committed in datasets/ieee_cis (never skipped: a
    checkout without it is broken)."""
    assert (CSP_DATA / "instances").is_dir(), f"{CSP_DATA}/instances missing from the checkout"
    return CSP_DATA


@pytest.fixture(scope="session")
def thesis_results():
    """The thesis' Gurobi results (not in the repository); skipped where ../shared lacks them."""
    if not (THESIS_RESULTS / "small_0").is_dir():
        pytest.skip(f"the thesis' MIP results are not committed (looked in {THESIS_RESULTS})")
    return THESIS_RESULTS


@pytest.fixture(scope="session")
def csp_tiny_text():
    """The tiny instance file's text (tests of the parser edit copies of it)."""
    return CSP_TINY


@pytest.fixture(scope="session")
def csp_tiny():
    """make(folder, days=2) -> (inst, base, solar, price): the tiny instance over `days` days
    (Monday first) with fixed random series, its file written into `folder`."""
    import csp_ldf

    def make(folder, days=2):
        (folder / "tiny.txt").write_text(CSP_TINY)
        inst = csp_ldf.read_instance(folder / "tiny.txt")
        inst.update(days=days, first_weekday=0)
        rng = np.random.default_rng(1)
        T = days * csp_ldf.DAY
        time_of_day = np.arange(T) % csp_ldf.DAY / csp_ldf.DAY
        base = 300 + 20 * rng.random(T)
        solar = 80 * np.clip(np.sin(time_of_day * 2 * np.pi - np.pi / 2), 0, None)
        price = (
            60 + 40 * np.sin(np.arange(T) / csp_ldf.DAY * 2 * np.pi) + 30 * rng.standard_normal(T)
        )
        return inst, base, solar, price

    return make


@pytest.fixture(scope="session")
def csp_data_copy(csp_data):
    """edit(folder, file, old, new) -> a copy of the challenge data folder in `folder` (links to
    the real files) in which `file` (relative to the data folder) is a real copy with its first
    `old` (bytes of text) replaced by `new`: bad input for the readers, one value at a time."""

    def edit(folder, file, old, new):
        root = folder / "data"
        for sub in ("instances", "price", "thesis_inputs", "energy_tsf"):
            (root / sub).mkdir(parents=True)
            for path in (csp_data / sub).iterdir():
                (root / sub / path.name).symlink_to(path)
        if file.endswith(".tsf"):  # committed compressed: the edited copy is plain text
            (root / (file + ".gz")).unlink()
            content = gzip.decompress((csp_data / (file + ".gz")).read_bytes())
        else:
            content = (csp_data / file).read_bytes()
        assert old.encode() in content, f"{old!r} is not in {file}"
        if (root / file).is_symlink():
            (root / file).unlink()
        (root / file).write_bytes(content.replace(old.encode(), new.encode(), 1))
        return root

    return edit


@pytest.fixture(scope="session")
def csp_tiny_checkpoint(tmp_path_factory, csp_tiny):
    """A CSP network of the tiny instance over a week (csp_tiny's series; csp_tiny_week's instance
    too), trained for one epoch (FC) on six of its labels -> the checkpoint's path."""
    import csp_ldf

    folder = tmp_path_factory.mktemp("tiny_network")
    inst, base, solar, price = csp_tiny(folder, days=TINY_WEEK)
    labels = folder / "labels"
    solve = dict(gap=0.0, time_limit=30)
    csp_ldf.generate_labels(
        inst, base, solar, price, labels, n=6, seed=1, workers=1, progress=False, **solve
    )
    ds = csp_ldf.load_dataset(inst, base, solar, labels)
    run = folder / "run"
    training = ["--model", "fc", "--epochs", "1", "--out", str(run), *TINY_ARCH, *TINY_TRAINING]
    return csp_ldf.train(csp_ldf.parse_args(training), ds, run)


# ---------------------------------------------------------------- helpers the tests import
# (from conftest import ...: pytest puts tests/ on sys.path)
def knapsack_brute_force(w, v, capacity):
    """(best value, best x) of a small 0/1 knapsack, by enumeration; exact int64 sums where the
    weights and values are integers, floats otherwise."""
    w, v = np.asarray(w), np.asarray(v)
    exact = w.dtype.kind in "iu" and v.dtype.kind in "iu"
    kind = np.int64 if exact else float
    bits = np.array(list(itertools.product([0, 1], repeat=len(w))), dtype=kind)
    weight, value = bits @ w.astype(kind), bits @ v.astype(kind)
    fits = np.flatnonzero(weight <= capacity)
    best = fits[np.argmax(value[fits])]  # (the empty set always fits)
    return value[best], bits[best].astype(float)


def knapsack_dp_value(w, v, capacity):
    """Optimal value by dynamic programming over the capacity (integer weights)."""
    best = np.zeros(int(np.floor(capacity)) + 1)
    for wi, vi in zip(w.astype(np.int64), v, strict=True):
        if wi < len(best):
            best[wi:] = np.maximum(best[wi:], best[: len(best) - wi] + vi)
    return best[-1]


TINY_WEEK = 7  # days: the tiny CSP instance over a week
# a CSP network small enough to train on the tiny instance in seconds
TINY_ARCH = "--conv 4,4,4 --kernels 3,3,3 --pool 8 --mixer 16,16 --head 8,8".split()
TINY_TRAINING = ["--batch-size", "4", "--threads", "1"]


def csp_tiny_week(folder, csp_tiny, seed):
    """The tiny CSP instance over a week with a price drawn from `seed`: (inst, base, solar,
    price, mip, schedule space, column costs)."""
    import csp_ldf

    inst, base, solar, price = csp_tiny(folder, days=TINY_WEEK)
    price = price + 80 * np.random.default_rng(seed).standard_normal(len(price))
    mip = csp_ldf.build_mip(inst, base, solar)
    space = csp_ldf.schedule_space(mip)
    return inst, base, solar, price, mip, space, csp_ldf.column_costs(mip, price)[0]
