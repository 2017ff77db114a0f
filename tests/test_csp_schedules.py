"""CSP schedules without learning (issue 23): the price-aware greedy, the local improvement and
the warm start, checked by the independent checker. Fixtures (csp_tiny, csp_data): conftest.py."""

import numpy as np
import pytest
from conftest import csp_tiny_week

import csp_ldf as C
from csrc import csp as csp_op

SEEDS = range(6)
# improve() in Python and by the C++ op (csrc/csp_improve.h), which make the same moves
IMPLEMENTATIONS = [
    pytest.param(False, id="python"),
    pytest.param(
        True,
        id="op",
        marks=pytest.mark.skipif(
            not csp_op.available(), reason="the C++ CSP op cannot be built here"
        ),
    ),
]


def checked(inst, base, solar, price, space, chosen):
    """(cost, violations) of a column choice through check_schedule, batteries by the DP."""
    states = np.array(
        [
            C.battery_dispatch(
                C.SLOT_MWH_PER_KW * price, inst["cap"][b], inst["m"][b], inst["eff"][b]
            )[1]
            for b in range(len(inst["cap"]))
        ]
    )
    decisions = C.ClassSchedule(space, chosen).decisions()
    cost, bad = C.check_schedule(inst, base, solar, price, *decisions, states)
    return cost, sum(bad.values())


@pytest.mark.parametrize("compiled", IMPLEMENTATIONS)
@pytest.mark.parametrize("seed", SEEDS)
def test_greedy_and_improve_are_feasible_and_improve_never_costs_more(
    tmp_path, csp_tiny, seed, compiled
):
    inst, base, solar, price, mip, space, cost = csp_tiny_week(tmp_path, csp_tiny, seed)
    label = C.solve(mip, price, gap=0.0, time_limit=60)
    fallback = C.chosen_columns(space, label["recurring_start"], label["oneoff_start"])
    greedy, fell_back = C.price_greedy(space, cost, fallback)
    assert not fell_back
    greedy_cost, bad = checked(inst, base, solar, price, space, greedy)
    assert bad == 0
    better, _ = C.improve(space, greedy, cost, compiled=compiled)
    better_cost, bad = checked(inst, base, solar, price, space, better)
    assert bad == 0 and better_cost <= greedy_cost + 1e-9
    assert better_cost >= label["objective"] - 1e-6  # the exact optimum bounds every schedule
    # from the optimum itself improve finds nothing to gain
    same, _ = C.improve(space, fallback, cost, compiled=compiled)
    assert checked(inst, base, solar, price, space, same)[0] == pytest.approx(label["objective"])


def single_moves(space, chosen):
    """Every schedule that differs from `chosen` in one class's column (or in a once-off
    class's being scheduled at all)."""
    for a in range(space["n"]):
        options = list(space["by_class"][a]) + ([-1] if a >= space["n_rec"] else [])
        for k in options:
            if k != chosen[a]:
                moved = chosen.copy()
                moved[a] = k
                yield moved


@pytest.mark.parametrize("compiled", IMPLEMENTATIONS)
@pytest.mark.parametrize("seed", SEEDS)
def test_improve_ends_in_a_local_optimum(tmp_path, csp_tiny, seed, compiled):
    """Enumeration through the checker finds no feasible single move that lowers the cost."""
    inst, base, solar, price, mip, space, cost = csp_tiny_week(tmp_path, csp_tiny, seed)
    start = np.full(space["n"], -1)
    start[: space["n_rec"]] = [space["by_class"][a][-1] for a in range(space["n_rec"])]
    assert checked(inst, base, solar, price, space, start)[1] == 0  # latest starts: feasible
    better, passes = C.improve(space, start, cost, compiled=compiled)
    assert passes < C.MAX_PASSES
    best_cost, bad = checked(inst, base, solar, price, space, better)
    assert bad == 0
    for moved in single_moves(space, better):
        moved_cost, moved_bad = checked(inst, base, solar, price, space, moved)
        assert moved_bad or moved_cost >= best_cost - 1e-6


@pytest.mark.parametrize("compiled", IMPLEMENTATIONS)
@pytest.mark.parametrize("seed", SEEDS[:2])
def test_improve_starts_no_move_that_its_estimates_say_cannot_finish(
    tmp_path, csp_tiny, seed, compiled
):
    """The budget is kept by prediction: a move starts only where the longest of its kind so
    far fits; the estimates never change what improve does without a budget."""
    inst, base, solar, price, mip, space, cost = csp_tiny_week(tmp_path, csp_tiny, seed)
    start = np.full(space["n"], -1)
    start[: space["n_rec"]] = [space["by_class"][a][-1] for a in range(space["n_rec"])]
    longest = {}
    unbounded, _ = C.improve(space, start, cost, compiled=compiled)
    estimated, _ = C.improve(space, start, cost, None, longest, compiled=compiled)
    assert np.array_equal(unbounded, estimated) and not np.array_equal(unbounded, start)
    assert set(longest) <= set(csp_op.MOVES) and "move_one" in longest
    assert all(seconds >= 0.0 for seconds in longest.values())
    too_long = dict.fromkeys(csp_op.MOVES, 3600.0)  # an hour a move, against a minute's budget
    same, passes = C.improve(space, start, cost, 60.0, too_long, compiled=compiled)
    assert np.array_equal(same, start) and passes == 1


@pytest.mark.slow
def test_improve_on_small_0_stays_feasible_and_gains(csp_data):
    """Two price scenarios of the real instance: greedy and improve feasible; improve gains."""
    inst = C.read_instance(csp_data / "instances/phase2_instance_small_0.txt")
    base, solar = C.read_loads(csp_data)
    real = C.read_price(csp_data)
    mip = C.build_mip(inst, base, solar)
    space = C.schedule_space(mip)
    parts = C.stl_parts(real)
    for i in range(2):
        price, _ = C.price_scenario(parts, C.DAY, 0, i)
        cost = C.column_costs(mip, price)[0]
        greedy, fell_back = C.price_greedy(space, cost, np.full(space["n"], -1))
        assert not fell_back
        better, _ = C.improve(space, greedy, cost)
        greedy_cost, greedy_bad = checked(inst, base, solar, price, space, greedy)
        better_cost, better_bad = checked(inst, base, solar, price, space, better)
        assert greedy_bad == better_bad == 0
        assert better_cost < greedy_cost - 1.0


def test_batched_battery_dispatch_is_the_dp(csp_data):
    inst = C.read_instance(csp_data / "instances/phase2_instance_small_0.txt")
    price = C.read_price(csp_data)
    prices = price + 30 * np.random.default_rng(0).standard_normal((3, len(price)))
    cost_per_kw = C.SLOT_MWH_PER_KW * prices
    for b in range(len(inst["cap"])):
        costs, states = C.battery_dispatch_batch(
            cost_per_kw, inst["cap"][b], inst["m"][b], inst["eff"][b]
        )
        for j, series in enumerate(cost_per_kw):
            one_cost, one_states = C.battery_dispatch(
                series, inst["cap"][b], inst["m"][b], inst["eff"][b]
            )
            assert costs[j] == pytest.approx(one_cost) and (states[j] == one_states).all()


def highs_at_start(inst, base, solar, price, mip, space, start):
    """The start's checked cost, after checking that its start vector satisfies every row and that
    HiGHS, held to its start columns and given it as its solution, reports that cost."""
    import highspy

    chosen = C.chosen_columns(space, start["recurring_start"], start["oneoff_start"])
    x0 = C.start_vector(mip, start)
    rows = mip["A"] @ x0
    assert (rows >= mip["row_lo"] - 1e-9).all() and (rows <= mip["row_hi"] + 1e-9).all()
    column_cost, offset, _ = C.objective(mip, price)
    expected, bad = checked(inst, base, solar, price, space, chosen)
    assert bad == 0 and column_cost @ x0 + offset == pytest.approx(expected)
    h = C.highs_model(mip, True, 1)
    n = len(x0)
    columns = np.arange(n, dtype=np.int32)
    h.changeColsCost(n, columns, column_cost)
    h.changeObjectiveOffset(offset)
    held = np.r_[x0[: mip["n_starts"]], mip["col_hi"][mip["n_starts"] :]]
    low = np.r_[x0[: mip["n_starts"]], mip["col_lo"][mip["n_starts"] :]]
    h.changeColsBounds(n, columns, low, held)
    solution = highspy.HighsSolution()
    solution.col_value = list(x0)
    solution.value_valid = True
    h.setSolution(solution)
    h.run()
    assert h.getModelStatus() == highspy.HighsModelStatus.kOptimal
    assert h.getInfo().objective_function_value == pytest.approx(expected)
    return expected


def test_highs_accepts_a_schedule_as_start_at_its_cost(tmp_path, csp_tiny):
    """The warm start: an improved schedule as HiGHS' start vector satisfies every row, and
    HiGHS held to its start columns reports the schedule's cost as its objective."""
    inst, base, solar, price, mip, space, cost = csp_tiny_week(tmp_path, csp_tiny, 0)
    greedy, _ = C.price_greedy(space, cost, np.full(space["n"], -1))
    recurring, oneoff = C.ClassSchedule(space, greedy).decisions()
    start = dict(recurring_start=recurring, oneoff_start=oneoff)
    expected = highs_at_start(inst, base, solar, price, mip, space, start)
    # and unheld, from that start, HiGHS ends no worse than it
    label = C.solve_highs(mip, price, gap=0.0, time_limit=60, start=start)
    assert label["objective"] <= expected + 1e-6


def test_highs_accepts_a_network_start_at_its_cost(tmp_path, csp_tiny, csp_tiny_checkpoint):
    """--start-from: a network's improved schedules for a batch of price scenarios
    (NetworkStarts.schedules) are feasible starts that HiGHS accepts at their cost; from one, the
    labels' solve ends no worse than it."""
    inst, base, solar, price, mip, space, cost = csp_tiny_week(tmp_path, csp_tiny, 0)
    starts = C.NetworkStarts(csp_tiny_checkpoint, inst, base, solar, price)
    assert starts.name.startswith(f"{csp_tiny_checkpoint.name}:")
    greedy, _ = C.price_greedy(space, cost, np.full(space["n"], -1))
    fallback = C.ClassSchedule(space, greedy).decisions()
    prices = np.stack([csp_tiny_week(tmp_path, csp_tiny, seed)[3] for seed in SEEDS[:3]])
    recurring, oneoff = starts.schedules(mip, space, prices, fallback)
    assert recurring.shape == (3, inst["n_rec"]) and oneoff.shape == (3, inst["n_oneoff"])
    for scenario, rec, one in zip(prices, recurring, oneoff, strict=True):
        start = dict(recurring_start=rec, oneoff_start=one, start=starts.name)
        expected = highs_at_start(inst, base, solar, scenario, mip, space, start)
    label = C.solve_highs(mip, scenario, gap=0.0, time_limit=60, start=start)
    assert label["objective"] <= expected + 1e-6


@pytest.mark.slow
def test_table10_rows_need_no_training(csp_data):
    """no_learning on a few labelled scenarios: greedy, greedy + improve, HiGHS and the label,
    every schedule feasible; the label's own row is AR 1."""
    import json
    from pathlib import Path

    name = "phase2_instance_small_0-forecast-block96-seed0"
    inst = C.read_instance(csp_data / "instances/phase2_instance_small_0.txt")
    base, solar = C.read_loads(csp_data)
    price = C.read_price(csp_data)
    dataset = Path(C.__file__).parent / C.DATASET_FOLDER / name
    assert json.loads((dataset / "manifest.json").read_text())["instance"] in name
    ds = C.load_dataset(inst, base, solar, Path("no-label-folder"), 0, 30, price, dataset=dataset)
    ds["split"]["test"] = ds["split"]["test"][:2]
    table = C.no_learning(ds, highs_limits=(0.1,))
    methods = {"greedy", "greedy + improve, 100 ms", "greedy + improve", "HiGHS 0.1 s"}
    assert set(table) == methods | {"MIP label (1 % gap)"}
    for method in ("greedy", "greedy + improve", "MIP label (1 % gap)"):
        assert table[method]["feasible_pct"] == 100
    assert table["MIP label (1 % gap)"]["ar_controllable"] == pytest.approx(1)
    assert table["greedy + improve"]["excess_mean"] <= table["greedy"]["excess_mean"] + 1e-9
    text = C.table10({}, table, 2)
    assert "| greedy + improve |" in text and "HiGHS 0.1 s" in text


@pytest.mark.parametrize("seed", SEEDS)
def test_once_off_min_cut_is_the_exact_once_off_optimum(tmp_path, csp_tiny, seed):
    """With the recurring classes held where the greedy put them, place_once_off_exactly's
    once-off classes cost what HiGHS proves optimal for them (the tiny instance's two once-off
    classes use different room sizes, so the cut's model is exact there)."""
    import highspy

    inst, base, solar, price, mip, space, cost = csp_tiny_week(tmp_path, csp_tiny, seed)
    greedy, _ = C.price_greedy(space, cost, np.full(space["n"], -1))
    schedule = C.ClassSchedule(space, greedy)
    C.place_once_off_exactly(schedule, cost)
    placed_cost, bad = checked(inst, base, solar, price, space, schedule.chosen)
    assert bad == 0
    column_cost, offset, _ = C.objective(mip, price)
    h = C.highs_model(mip, True, 1)
    n = len(column_cost)
    columns = np.arange(n, dtype=np.int32)
    h.changeColsCost(n, columns, column_cost)
    h.changeObjectiveOffset(offset)
    recurring = mip["cols"]["cls"] < space["n_rec"]
    held = np.zeros(mip["n_starts"])
    held[greedy[: space["n_rec"]]] = 1
    low = np.r_[np.where(recurring, held, 0), mip["col_lo"][mip["n_starts"] :]]
    high = np.r_[np.where(recurring, held, 1), mip["col_hi"][mip["n_starts"] :]]
    h.changeColsBounds(n, columns, low, high)
    h.setOptionValue("mip_rel_gap", 0.0)
    h.run()
    assert h.getModelStatus() == highspy.HighsModelStatus.kOptimal
    # (the cut prices in cents: two classes round by at most a cent each)
    assert placed_cost == pytest.approx(h.getInfo().objective_function_value, abs=0.02)
