"""knapsack_ldf.py's instances and exact labels: the thesis' generator, Pisinger's classes,
the solvers against brute force and dynamic programming, label files."""

import hashlib
import os

import numpy as np
import pytest
from conftest import knapsack_brute_force, knapsack_dp_value

import knapsack_ldf as ks


# ---------------------------------------------------------------- labels
def solvers():
    out = ["ortools"]
    try:
        import gurobipy  # noqa: F401

        out.append("gurobi")
    except ImportError:
        pass
    return out


@pytest.mark.parametrize("solver", ["ortools", "gurobi"])
def test_labels_equal_brute_force(solver):
    if solver not in solvers():
        pytest.skip("gurobipy is not installed")
    w, v, capacity = ks.make_instances(12, 12, seed=3)
    solve = ks.solve_gurobi if solver == "gurobi" else ks.solve_ortools
    for i in range(len(w)):
        x = solve(w[i], v[i], capacity[i]).astype(float)
        best, _ = knapsack_brute_force(w[i], v[i], capacity[i])
        assert x @ w[i] <= capacity[i]
        assert x @ v[i] == pytest.approx(best, rel=1e-9, abs=1e-9)


def test_no_heuristic_beats_the_labels(tmp_path):
    """Exact labels: greedy and random feasible solutions never have a higher value (the 1e-6 weight
    rounding of an earlier version failed this on 0.17 % of n=500 instances)."""
    w, v, capacity = ks.make_instances(200, 300, seed=4)
    x, opt, _ = ks.make_labels(w, v, capacity, tmp_path / "labels", "ortools", workers=2, chunk=150)
    assert ((x * w).sum(1) <= capacity).all()
    assert ((ks.greedy(w, v, capacity) * v).sum(1) <= opt).all()
    rng = np.random.default_rng(0)
    assert ((ks.repair(rng.random(w.shape), w, v, capacity) * v).sum(1) <= opt).all()


def test_labels_resume_after_interrupt(tmp_path):
    w, v, capacity = ks.make_instances(15, 40, seed=1)
    folder = tmp_path / "labels"
    x1, opt1, _ = ks.make_labels(w, v, capacity, folder, "ortools", workers=1, chunk=10)
    chunks = sorted(name for name in os.listdir(folder) if name.startswith("chunk_"))
    assert len(chunks) == 4
    os.remove(folder / chunks[2])  # as if interrupted before the third chunk was written
    before = {c: os.path.getmtime(folder / c) for c in chunks if c != chunks[2]}
    x2, opt2, _ = ks.make_labels(w, v, capacity, folder, "ortools", workers=1, chunk=10)
    assert {
        c: os.path.getmtime(folder / c) for c in before
    } == before  # solved chunks were not redone
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(opt1, opt2)


def test_instances_cover_capacities():
    w, v, capacity = ks.make_instances(10, 99, seed=0)
    alpha = capacity / w.sum(1)
    np.testing.assert_allclose(alpha, np.arange(1, 100) / 100)
    s = ks.split(99, seed=0)
    assert sorted(np.concatenate(list(s.values())).tolist()) == list(range(99))


def test_instances_are_the_thesis_integers():
    w, v, capacity = ks.make_instances(50, 40, seed=1)
    for array in (w, v):
        assert (array == np.round(array)).all() and array.min() >= 1 and array.max() <= 2000
    w, _, _ = ks.make_instances(50, 40, seed=1, value_range=10)
    assert w.max() <= 10


def test_greedy_and_repair_judge_fit_by_the_tables_sum():
    """Weights like integer / 1000 are not exact binary numbers: a running 'remaining capacity'
    and the tables' sum(x * w) - W then disagree in the last bit on instances filled exactly
    (12 of these 2000 with the old decoder); one sum must decide both."""
    rng = np.random.default_rng(0)
    n_instances = 2000
    integer_weights = rng.integers(1, 11, size=(n_instances, 50))
    w = integer_weights / 1000
    v = rng.integers(1, 1001, size=(n_instances, 50)) / 1000
    spread = np.arange(1, n_instances + 1) / (n_instances + 1)
    capacity = np.floor(spread * integer_weights.sum(1)) / 1000
    data = {"w": w, "v": v, "capacity": capacity, "opt": np.ones(n_instances)}
    rows = np.arange(n_instances)
    for x in (ks.greedy(w, v, capacity), ks.repair(rng.random(w.shape), w, v, capacity)):
        assert (ks.solution_metrics(x, data, rows)["nu"] == 0).all()


def test_greedy_is_feasible_and_scans_past_misfits():
    w = np.array([[0.5, 0.6, 0.1]])
    v = np.array([[1.0, 0.9, 0.1]])
    x = ks.greedy(w, v, np.array([0.65]))  # takes item 0, skips item 1 (too heavy), takes item 2
    np.testing.assert_array_equal(x, [[1, 0, 1]])


# ---------------------------------------------------------------- Pisinger's classes (issue 12)
UNCORRELATED_SHA256 = "a8a04b854a4fa0cef465277f4b6f01eedbbaebba4e2067cfffc99b656bbf5398"


def test_uncorrelated_default_is_bit_identical_to_the_thesis_generator():
    """The default class draws w then v ~ U{1..R} from one seeded generator, as before
    --distribution existed (the hash is of make_instances(500, 1000, seed=0) before the change)."""
    w, v, capacity = ks.make_instances(500, 1000, seed=0)
    digest = hashlib.sha256(w.tobytes() + v.tobytes() + capacity.tobytes()).hexdigest()
    assert digest == UNCORRELATED_SHA256
    again = ks.make_instances(500, 1000, 0, ks.THESIS_VALUE_RANGE, "uncorrelated")
    for ours, theirs in zip((w, v, capacity), again, strict=True):
        np.testing.assert_array_equal(ours, theirs)
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(w, rng.integers(1, 2000, size=(1000, 500), endpoint=True))
    np.testing.assert_array_equal(v, rng.integers(1, 2000, size=(1000, 500), endpoint=True))


def spanner_items_are_multiples(w, v, range_):
    """Every item of a spanner(2, 10) instance is a * (w_k, v_k) of one of 2 spanner items with
    w_k, v_k <= ceil(R / 11) and a in 1..10: at most two value/weight ratios per instance."""
    for wi, vi in zip(w.astype(np.int64), v.astype(np.int64), strict=True):
        common_factor = np.gcd(vi, wi)
        reduced = zip((vi // common_factor).tolist(), (wi // common_factor).tolist(), strict=True)
        ratios = set(reduced)
        assert len(ratios) <= ks.SPANNER_SIZE
    largest = ks.SPANNER_MULTIPLIER * -(-range_ // (ks.SPANNER_MULTIPLIER + 1))
    assert w.max() <= largest


@pytest.mark.parametrize("distribution", ks.DISTRIBUTIONS)
@pytest.mark.parametrize("range_", [1000, 10**6])
def test_pisinger_classes(distribution, range_):
    n_items, n_instances = 200, 30
    w, v, capacity = ks.make_instances(n_items, n_instances, 5, range_, distribution)
    for array in (w, v):
        assert array.dtype == np.float64 and (array == np.round(array)).all() and array.min() >= 1
    alpha = capacity / w.sum(1)
    np.testing.assert_allclose(alpha, np.arange(1, n_instances + 1) / (n_instances + 1))
    offset, spread = range_ // 10, range_ // 500
    if distribution == "uncorrelated":
        assert w.max() <= range_ and v.max() <= range_
        assert abs(np.corrcoef(w.ravel(), v.ravel())[0, 1]) < 0.05
    elif distribution == "weakly-correlated":
        assert w.max() <= range_
        assert ((v == 1) | (np.abs(v - w) <= offset)).all()
        assert (v - w).min() < -offset / 2 and (v - w).max() > offset / 2
    elif distribution == "strongly-correlated":
        assert w.max() <= range_ and (v == w + offset).all()
    elif distribution == "inverse-strongly-correlated":
        assert v.max() <= range_ and (w == v + offset).all()
    elif distribution == "almost-strongly-correlated":
        assert w.max() <= range_ and (np.abs(v - w - offset) <= spread).all()
        assert (v - w - offset).min() < -spread / 2 and (v - w - offset).max() > spread / 2
    elif distribution == "subset-sum":
        assert w.max() <= range_ and (v == w).all()
    elif distribution == "similar-weights":  # R plays no part
        assert w.min() >= 100_000 and w.max() <= 100_100 and v.max() <= 1000
        np.testing.assert_array_equal(
            w, ks.make_instances(n_items, n_instances, 5, 7, distribution)[0]
        )
    else:
        spanner_items_are_multiples(w, v, range_)
        if distribution == "spanner-strongly-correlated":
            assert (v > w).all()
    same = ks.make_instances(n_items, n_instances, 5, range_, distribution)
    other = ks.make_instances(n_items, n_instances, 6, range_, distribution)
    np.testing.assert_array_equal(same[0], w)
    np.testing.assert_array_equal(same[1], v)
    assert (other[0] != w).any()


@pytest.mark.parametrize("distribution", ks.DISTRIBUTIONS)
def test_exact_solvers_equal_brute_force_on_every_class(distribution):
    """The core algorithm and OR-Tools' branch and bound against enumeration, on small instances
    of every class at a small and a large range (the capacity sweeps alpha through (0, 1))."""
    for range_ in (max(20, ks.MIN_RANGE.get(distribution, 0)), 10**6):
        w, v, capacity = ks.make_instances(12, 15, 11, range_, distribution)
        for i in range(len(w)):
            best, _ = knapsack_brute_force(w[i], v[i], capacity[i])
            for solve in (ks.solve_core, ks.solve_ortools):
                x = solve(w[i], v[i], capacity[i], 10.0).astype(float)
                assert x @ w[i] <= capacity[i]
                assert x @ v[i] == best, (solve.__name__, range_, i)


@pytest.mark.parametrize("distribution", ["uncorrelated", "weakly-correlated", "subset-sum"])
def test_core_solver_equals_ortools_at_n_200(distribution):
    w, v, capacity = ks.make_instances(200, 20, 2, 10**4, distribution)
    for i in range(len(w)):
        ours = ks.solve_core(w[i], v[i], capacity[i]).astype(float)
        theirs = ks.solve_ortools(w[i], v[i], capacity[i], 10.0).astype(float)
        assert ours @ w[i] <= capacity[i]
        assert ours @ v[i] == theirs @ v[i]


def test_core_solver_edge_cases():
    w, v = np.array([5.0, 6.0, 7.0]), np.array([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(ks.solve_core(w, v, 4.9), [0, 0, 0])  # nothing fits
    np.testing.assert_array_equal(ks.solve_core(w, v, 18.0), [1, 1, 1])  # everything fits
    np.testing.assert_array_equal(ks.solve_core(w, v, 7.5), [0, 0, 1])
    with pytest.raises(ValueError, match="integer"):
        ks.solve_core(w + 0.5, v, 10.0)


@pytest.mark.parametrize("distribution", ks.DISTRIBUTIONS)
def test_core_solver_with_its_cardinality_bound_always_on_equals_dynamic_programming(
    distribution, monkeypatch
):
    """The cardinality bound normally waits for CORE_BOUND_STATES states; here it is tried at
    every step, on instances small enough for a DP over the capacity (n = 60, R up to 1000)."""
    monkeypatch.setattr(ks, "CORE_BOUND_STATES", 0)
    for range_ in (max(37, ks.MIN_RANGE.get(distribution, 0)), 1000):
        w, v, capacity = ks.make_instances(60, 20, range_, range_, distribution)
        if distribution == "similar-weights":  # keep the DP small: weights 10..110
            w = w - (ks.SIMILAR_WEIGHT_LOW - 10)
            capacity = np.arange(1, 21) / 21 * w.sum(1)
        for i in range(len(w)):
            x = ks.solve_core(w[i], v[i], capacity[i]).astype(float)
            assert x @ w[i] <= capacity[i]
            assert x @ v[i] == knapsack_dp_value(w[i], v[i], capacity[i]), (range_, i)


def test_cardinality_bound_is_valid_and_tight_on_strongly_correlated_data():
    rng = np.random.default_rng(0)
    for _ in range(200):
        w = rng.integers(1, 30, size=10)
        v = rng.integers(1, 30, size=10)
        capacity = int(rng.integers(1, w.sum()))
        best, _ = knapsack_brute_force(w.astype(float), v.astype(float), capacity)
        assert ks.dantzig_bound(w, v, capacity) >= best
        assert ks.cardinality_bound(w, v, capacity, int(best)) >= best
        assert ks.cardinality_bound(w, v, capacity, int(v.sum()) + 1) <= v.sum()
    w = np.array([3, 5, 8, 9, 10])  # v = w + 4: at most 2 items fit in 15, at best filling it
    assert ks.cardinality_bound(w, w + 4, 15, 1) == 15 + 4 * 2
    assert ks.dantzig_bound(w, w + 4, 15) > 15 + 4 * 2


@pytest.mark.parametrize("distribution", ["strongly-correlated", "inverse-strongly-correlated"])
def test_core_solver_is_fast_on_strongly_correlated_data_at_large_range(distribution):
    """R = 10^7, n = 500: the minknap-style core alone took seconds here at R = 10^5 and held
    millions of states at R = 10^6; with combo's cardinality bound and pairing an instance takes
    well under a second (the limit leaves room for a loaded machine). On strongly correlated
    data the bound itself certifies the label: no solution is worth one more."""
    w, v, capacity = ks.make_instances(500, 6, 0, 10**7, distribution)
    for i in range(len(w)):
        x = ks.solve_core(w[i], v[i], capacity[i], 20.0).astype(float)
        assert x @ w[i] <= capacity[i]
        if distribution == "strongly-correlated":
            target = int(x @ v[i]) + 1
            w_int, v_int = w[i].astype(np.int64), v[i].astype(np.int64)
            assert ks.cardinality_bound(w_int, v_int, int(capacity[i]), target) < target


def test_a_label_not_proven_in_time_is_a_clear_error(tmp_path):
    w, v, capacity = ks.make_instances(500, 4, 0, 10**6, "almost-strongly-correlated")
    with pytest.raises(ks.LabelTimeout, match="within 0.001 s"):
        ks.solve_core(w[2], v[2], capacity[2], 0.001)
    with pytest.raises(SystemExit, match=r"instance \d+ \(alpha = .*--time-limit.*--solver core"):
        ks.make_labels(w, v, capacity, tmp_path / "labels", "ortools", 1, time_limit=0.01)


def test_labels_only_on_a_class_caches_it_and_prints_greedy(tmp_path, capsys):
    flags = ["--distribution", "strongly-correlated", "--range", "1000", "--items", "30"]
    flags += ["--instances", "40", "--workers", "1", "--data-dir", str(tmp_path), "--labels-only"]
    ks.main(flags)
    out = capsys.readouterr().out
    assert "labels by combo" in out and "greedy v/w on all 40 instances: AR 1.0" in out
    folder = ks.data_folder(tmp_path, 30, 40, 0, 1000, "strongly-correlated")
    assert folder.endswith("strongly-correlated_R1000_n30_S40_seed0")
    assert len(os.listdir(os.path.join(folder, "labels_combo"))) > 0
    args = ks.parse_args(flags[:-1])
    assert args.out == os.path.join("runs", "knapsack", "strongly-correlated_R1000", "ldf")
    assert "distribution" in ks.resume_fingerprint(vars(args))
    assert "distribution" not in ks.resume_fingerprint(vars(ks.parse_args([])))
