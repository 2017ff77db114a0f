"""The C++ exact knapsack solver (csrc/knapsack.h through ldf_ip::knapsack_exact, knapsack_ldf's
"combo" labels) against enumeration, a dynamic program over the capacity and the numpy core
algorithm, on every one of Pisinger's classes; its time limit, input checks, batching, fallback
and benchmark."""

import itertools

import numpy as np
import pytest
import torch
from conftest import knapsack_brute_force, knapsack_dp_value

import knapsack_ldf as ks
from csrc import knapsack as exact

N_LARGE = 500
RANGES = (10**3, 10**4, 10**5, 10**6, 10**7)
DP_CAPACITY = 300_000  # a dynamic program over the capacity up to this is cheap in numpy

pytestmark = pytest.mark.skipif(
    not exact.available(), reason="the C++ knapsack op cannot be built here"
)


def assert_optimal_at_shares(w, v, shares, case):
    """exact.solve at capacities floor(share * total weight): feasible, 0/1, brute force's value."""
    for share in shares:
        capacity = np.floor(share * w.sum())
        x = exact.solve(w, v, capacity)
        assert set(np.unique(x)) <= {0, 1} and x @ w <= capacity
        assert x @ v == knapsack_brute_force(w, v, capacity)[0], (*case, share)


def ranges_of(distribution):
    if distribution == "similar-weights":
        return RANGES[:1]  # R unused
    return [r for r in RANGES if r >= ks.MIN_RANGE.get(distribution, 0)]


@pytest.mark.parametrize("distribution", ks.DISTRIBUTIONS)
def test_equals_brute_force_on_every_class(distribution):
    """n = 1..12 at a small and a large range; alpha sweeps (0, 1)."""
    for range_ in (max(20, ks.MIN_RANGE.get(distribution, 0)), 10**6):
        for n_items in (1, 2, 7, 12):
            w, v, capacity = ks.make_instances(n_items, 12, 11 + n_items, range_, distribution)
            x, status, _ = exact.solve_batch(w, v, capacity)
            assert (status == exact.OPTIMAL).all()
            for i in range(len(w)):
                assert x[i] @ w[i] <= capacity[i]
                assert x[i] @ v[i] == knapsack_brute_force(w[i], v[i], capacity[i])[0], (range_, i)


@pytest.mark.parametrize("distribution", ks.DISTRIBUTIONS)
def test_equals_dynamic_programming_over_the_capacity_at_n_500(distribution):
    """Every R: the class's items at n = 500, with capacities small enough for the DP (alpha
    spread over (0, 1) at R = 10^3; from R = 10^4 on, capacities up to DP_CAPACITY)."""
    for range_ in ranges_of(distribution):
        w, v, capacity = ks.make_instances(N_LARGE, 4, 3, range_, distribution)
        if distribution == "similar-weights":  # weights of 10^5: keep a few items' worth
            capacity = np.array([3.5, 7.2, 20.0, 40.9]) * ks.SIMILAR_WEIGHT_LOW
        elif range_ > 10**3:
            capacity = np.minimum(capacity, DP_CAPACITY * np.array([0.2, 0.5, 0.8, 1.0]))
        if distribution == "similar-weights":
            capacity = capacity / 10  # the DP goes to 4e6 at most
            w = w - ks.SIMILAR_WEIGHT_LOW + ks.SIMILAR_WEIGHT_LOW // 10
        x, status, _ = exact.solve_batch(w, v, capacity)
        assert (status == exact.OPTIMAL).all()
        for i in range(len(w)):
            assert x[i] @ w[i] <= capacity[i]
            assert x[i] @ v[i] == knapsack_dp_value(w[i], v[i], capacity[i]), (range_, i)


@pytest.mark.parametrize("distribution", ks.DISTRIBUTIONS)
def test_equals_solve_core_at_n_500_for_every_range(distribution):
    """R = 10^3 .. 10^7, alpha spread over (0, 1): the optimal values of solve_core."""
    for range_ in ranges_of(distribution):
        w, v, capacity = ks.make_instances(N_LARGE, 3, 5, range_, distribution)
        x, status, _ = exact.solve_batch(w, v, capacity, 60.0)
        assert (status == exact.OPTIMAL).all()
        for i in range(len(w)):
            theirs = ks.solve_core(w[i], v[i], capacity[i], 60.0)
            assert x[i] @ w[i] <= capacity[i]
            assert x[i] @ v[i] == theirs @ v[i], (range_, i)


@pytest.mark.parametrize(
    "distribution", ["spanner-weakly-correlated", "spanner-strongly-correlated"]
)
def test_solutions_older_than_a_states_64_decisions_are_recovered(distribution):
    """On these instances (checked with a counter in the C++) the best state depends on core
    decisions older than the 64 it keeps: its solution comes from a nested knapsack of their
    items, whose optimum is known. The solution must still reach solve_core's value."""
    w, v, capacity = ks.make_instances(N_LARGE, 5, 5, 10**6, distribution)
    x, status, _ = exact.solve_batch(w, v, capacity)
    assert (status == exact.OPTIMAL).all()
    for i in range(len(w)):
        assert x[i] @ w[i] <= capacity[i]
        assert x[i] @ v[i] == ks.solve_core(w[i], v[i], capacity[i]) @ v[i]


# Instances of bench/knapsack_exact.py (n = 500, 20 per class and R, seed 0) on which the solver's
# newer parts find or prove the optimum (checked with counters in the C++): swap pairing on
# strongly and inverse strongly correlated data at R = 10^7 (an incumbent of a state plus a
# removed and an added item outside the core); on almost strongly correlated data at R = 10^6,
# surrogate problems solved above the incumbent (instance 1: its solution fits and is optimal),
# and infeasible surrogate solutions repaired into incumbents, with the multiplier stepped
# towards 0 to cut them off (instances 6 and 8).
BENCH_CASES = [
    ("strongly-correlated", 10**7, range(20)),
    ("inverse-strongly-correlated", 10**7, range(20)),
    ("strongly-correlated", 10**6, range(0, 20, 4)),
    ("almost-strongly-correlated", 10**6, [1, 6, 8]),
]


@pytest.mark.parametrize(("distribution", "range_", "which"), BENCH_CASES)
def test_benchmark_instances_of_swap_pairing_and_surrogates_equal_solve_core(
    distribution, range_, which
):
    w, v, capacity = ks.make_instances(N_LARGE, 20, 0, range_, distribution)
    which = list(which)
    x, status, _ = exact.solve_batch(w[which], v[which], capacity[which], 60.0)
    assert (status == exact.OPTIMAL).all()
    for k, i in enumerate(which):
        theirs = ks.solve_core(w[i], v[i], capacity[i], 60.0)
        assert x[k] @ w[i] <= capacity[i]
        assert x[k] @ v[i] == theirs @ v[i], i


@pytest.mark.parametrize("distribution", ["strongly-correlated", "almost-strongly-correlated"])
def test_scaled_to_128_bit_products_the_same_optimum(distribution):
    """Weights, values and capacities times 2^28 (sums near 2^61): the same optimum times 2^28.
    The LP relaxations of the cardinality bound then need 128-bit products (the 64-bit fast path
    is off), as do the state reductions by it."""
    scale = 2**28
    w, v, capacity = ks.make_instances(N_LARGE, 4, 9, 10**4, distribution)
    capacity = np.floor(capacity)
    x, status, _ = exact.solve_batch(w, v, capacity)
    big_w = w.astype(np.int64) * scale
    big_v = v.astype(np.int64) * scale
    big_x, big_status, _ = exact.solve_batch(big_w, big_v, capacity.astype(np.int64) * scale)
    assert (status == exact.OPTIMAL).all() and (big_status == exact.OPTIMAL).all()
    for i in range(len(w)):
        assert big_x[i] @ big_w[i] <= capacity[i] * scale
        assert big_x[i] @ big_v[i] == (x[i] @ v[i].astype(np.int64)) * scale, i


def identical_items(rng, n_items, kinds, high):
    """n_items drawn from `kinds` kinds of (weight, value), so that many are identical."""
    kind_w = rng.integers(1, high, kinds)
    kind_v = rng.integers(1, high, kinds)
    pick = rng.integers(0, kinds, n_items)
    return kind_w[pick].astype(np.int64), kind_v[pick].astype(np.int64)


def test_identical_items_bundled_equal_brute_force():
    """Few kinds among many items: the solver bundles identical items (binary splitting) and must
    still take every count of each kind that pays, and give back a solution over the items."""
    rng = np.random.default_rng(20)
    for n_items in (4, 8, 12):
        for kinds in (1, 2, 3):
            for high in (5, 1000):
                w, v = identical_items(rng, n_items, kinds, high)
                assert_optimal_at_shares(w, v, (0.1, 0.3, 0.5, 0.7, 0.95), (n_items, kinds))


@pytest.mark.parametrize("random_items", [0, 60, 200])
def test_identical_items_bundled_at_n_500_equal_dp(random_items):
    """500 items: a few kinds repeated hundreds of times, plus random_items distinct ones (200:
    too many kinds to bundle, the plain path); against the DP over the capacity and solve_core."""
    rng = np.random.default_rng(random_items)
    w_same, v_same = identical_items(rng, N_LARGE - random_items, 5, 1000)
    w = np.concatenate([w_same, rng.integers(1, 1000, random_items)])
    v = np.concatenate([v_same, rng.integers(1, 1000, random_items)])
    order = rng.permutation(N_LARGE)
    w, v = w[order], v[order]
    for share in (0.05, 0.3, 0.5, 0.8):
        capacity = np.floor(share * w.sum())
        x = exact.solve(w, v, capacity)
        assert set(np.unique(x)) <= {0, 1} and x @ w <= capacity
        assert x @ v == knapsack_dp_value(w, v, capacity) == ks.solve_core(w, v, capacity) @ v, (
            share
        )


def multiples_of_ratios(rng, n_items, ratios, largest_multiple):
    """Items that are each a multiple of one of `ratios` random (weight, value) pairs: all items
    of a ratio are equally efficient (as in the spanner classes)."""
    base_w = rng.integers(1, 60, ratios)
    base_v = rng.integers(1, 60, ratios)
    pick = rng.integers(0, ratios, n_items)
    multiple = rng.integers(1, largest_multiple + 1, n_items)
    return base_w[pick] * multiple, base_v[pick] * multiple


def test_items_of_one_or_two_ratios_equal_brute_force():
    """One or two ratios: the solver solves a subset-sum over the multiples of each ratio
    (solve_by_ratios); three: the core algorithm. Both against enumeration."""
    rng = np.random.default_rng(21)
    for n_items in (1, 5, 9, 12):
        for ratios in (1, 2, 3):
            for _ in range(3):
                w, v = multiples_of_ratios(rng, n_items, ratios, 10)
                shares = (0.0, 0.2, 0.45, 0.7, 0.9, 1.0)
                assert_optimal_at_shares(w, v, shares, (n_items, ratios))


@pytest.mark.parametrize("largest_multiple", [10, 300, 3000])
def test_items_of_two_ratios_at_n_500_equal_dp(largest_multiple):
    """500 items of two ratios; multiples up to 3000 make the bitsets too large, and the core
    algorithm solves them instead. Against the DP over the capacity (where it is cheap) and
    solve_core."""
    rng = np.random.default_rng(largest_multiple)
    w, v = multiples_of_ratios(rng, N_LARGE, 2, largest_multiple)
    for share in (0.01, 0.3, 0.6, 0.95):
        capacity = np.floor(share * w.sum())
        x = exact.solve(w, v, capacity)
        assert set(np.unique(x)) <= {0, 1} and x @ w <= capacity
        value = x @ v
        assert value == ks.solve_core(w, v, capacity) @ v, share
        if capacity <= DP_CAPACITY:
            assert value == knapsack_dp_value(w, v, capacity), share


def test_batch_in_parallel_equals_one_at_a_time():
    w, v, capacity = ks.make_instances(200, 16, 1, 10**5, "almost-strongly-correlated")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        x, status, seconds = exact.solve_batch(w, v, capacity)
    finally:
        torch.set_num_threads(threads)
    assert (status == exact.OPTIMAL).all() and (seconds > 0).all()
    for i in range(len(w)):
        assert x[i] @ v[i] == exact.solve(w[i], v[i], capacity[i]) @ v[i]


def test_is_the_default_label_solver_on_every_class():
    for distribution in ks.DISTRIBUTIONS:
        assert ks.default_solver(distribution) == "combo"
    assert ks.SOLVE["combo"] is ks.solve_combo
    assert ks.parse_args(["--solver", "ortools"]).solver == "ortools"  # still an option


def test_a_label_not_proven_in_time_is_the_usual_error(tmp_path):
    w, v, capacity = ks.make_instances(500, 4, 0, 10**6, "almost-strongly-correlated")
    with pytest.raises(ks.LabelTimeout, match="did not prove optimality within 1e-09 s"):
        ks.solve_combo(w[2], v[2], capacity[2], 1e-9)
    _, status, _ = exact.solve_batch(w, v, capacity, 1e-9)
    assert (status == exact.TIME_LIMIT).all()
    with pytest.raises(SystemExit, match=r"instance \d+ \(alpha = .*--time-limit.*--solver"):
        ks.make_labels(w, v, capacity, tmp_path / "labels", "combo", 1, time_limit=1e-9)


def test_edge_cases_and_bad_input():
    w, v = np.array([5.0, 6.0, 7.0]), np.array([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(exact.solve(w, v, 4.9), [0, 0, 0])  # nothing fits
    np.testing.assert_array_equal(exact.solve(w, v, 18.0), [1, 1, 1])  # everything fits
    np.testing.assert_array_equal(exact.solve(w, v, 7.5), [0, 0, 1])
    np.testing.assert_array_equal(exact.solve(w, v, -3.0), [0, 0, 0])
    np.testing.assert_array_equal(exact.solve(w, v, 1e30), [1, 1, 1])
    # a free item is taken, an item of value <= 0 never is
    np.testing.assert_array_equal(exact.solve([0, 4, 3], [2, -1, 0], 10), [1, 0, 0])
    np.testing.assert_array_equal(exact.solve(np.zeros(0), np.zeros(0), 5.0), np.zeros(0))
    with pytest.raises(ValueError, match="integer"):
        exact.solve(w + 0.5, v, 10.0)
    for bad in (np.nan, np.inf, -np.inf):
        with pytest.raises(ValueError, match="integer"):
            exact.solve(np.array([5.0, bad, 7.0]), v, 10.0)
    with pytest.raises(ValueError, match="too large"):
        exact.solve(np.array([5.0, 2.0**62, 7.0]), v, 10.0)
    np.testing.assert_array_equal(exact.solve(w, -np.array([-1.0, 2.0, -3.0]), 12.0), [1, 0, 1])
    with pytest.raises(ValueError, match="weights >= 0"):
        exact.solve([-1, 2], [1, 1], 5)
    with pytest.raises(ValueError, match="too large"):
        exact.solve([2**61, 2**61, 2**61], [1, 1, 1], 2**62)
    big = 2**40  # exact where a float64 product would not be: values near 2^50
    w = np.array([big + 1, big + 3, big + 7, 2 * big + 1], dtype=np.int64)
    v = np.array([big * 512 + 5, big * 512 + 17, big * 512 + 40, big * 1024 + 1], dtype=np.int64)
    x = exact.solve(w, v, 2 * big + 4)
    assert int(x @ v) == max(
        int(v[i] + v[j])
        for i, j in itertools.combinations(range(3), 2)
        if w[i] + w[j] <= 2 * big + 4
    )


def test_falls_back_to_solve_core_where_the_op_cannot_be_built(monkeypatch):
    w, v, capacity = ks.make_instances(30, 2, 0, 1000, "strongly-correlated")
    called = []
    monkeypatch.setattr(exact, "available", lambda: False)
    original = ks.solve_core
    monkeypatch.setattr(ks, "solve_core", lambda *args: called.append(True) or original(*args))
    x = ks.solve_combo(w[0], v[0], capacity[0])
    assert called and x @ v[0] == exact.solve(w[0], v[0], capacity[0]) @ v[0]


def test_the_op_passes_opcheck():
    """Schema and fake kernel (the AOT-dispatch checks compare outputs of two runs, and the
    seconds each instance took differ from run to run)."""
    w = torch.tensor([[3, 4, 5, 9], [2, 2, 3, 1]])
    v = torch.tensor([[4, 5, 6, 10], [3, 1, 4, 2]])
    capacity = torch.tensor([8, 4])
    utils = ("test_schema", "test_faketensor")
    op = torch.ops.ldf_ip.knapsack_exact.default
    torch.library.opcheck(op, (w, v, capacity, 0.0), test_utils=utils)


def test_benchmark_runs_quick(capsys):
    from bench import knapsack_exact

    flags = ["--quick", "--classes", "uncorrelated", "strongly-correlated", "--time-limit", "1"]
    knapsack_exact.main(flags + ["--solvers", "combo", "core", "ortools"])
    out = capsys.readouterr().out
    assert "| uncorrelated | 10^3 | " in out and "| strongly-correlated | 10^5 | " in out
    assert "combo (C++) ms | solved | solve_core ms" in out and "load average" in out
    assert "(cpu time)" not in out
    knapsack_exact.main(flags + ["--solvers", "combo", "core", "--clock", "cpu"])
    out = capsys.readouterr().out
    assert "(cpu time)" in out and "| strongly-correlated | 10^5 | " in out
