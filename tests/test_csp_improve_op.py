"""The C++ op ldf_ip::csp_improve (csrc/csp_improve.h, csrc/csp.py) against csp_ldf's Python
improve: the same moves to the same schedule, on the tiny instance and on small_0; its packing of
the schedule space; its batch; its checks of bad input; its registration (opcheck)."""

import numpy as np
import pytest
import torch
from conftest import csp_tiny_week

import csp_ldf as C
from csrc import csp as csp_op

pytestmark = pytest.mark.skipif(
    not csp_op.available(), reason="the C++ CSP op cannot be built here"
)

SEEDS = range(6)
SMALL_0_SCENARIOS = 3


def tiny_case(folder, csp_tiny, seed):
    """The tiny instance over a week (conftest.csp_tiny_week): (space, column costs)."""
    return csp_tiny_week(folder, csp_tiny, seed)[5:]


@pytest.fixture(scope="module")
def small_0(csp_data):
    """small_0's schedule space and the column costs of a few price scenarios."""
    inst = C.read_instance(csp_data / "instances/phase2_instance_small_0.txt")
    base, solar = C.read_loads(csp_data)
    mip = C.build_mip(inst, base, solar)
    parts = C.stl_parts(C.read_price(csp_data))
    prices = [C.price_scenario(parts, C.DAY, 0, i)[0] for i in range(SMALL_0_SCENARIOS)]
    return mip, C.schedule_space(mip), C.column_costs(mip, np.array(prices))


def latest_starts(space):
    """Every recurring class at its last column, no once-off class: feasible on the tiny case."""
    start = np.full(space["n"], -1)
    start[: space["n_rec"]] = [space["by_class"][a][-1] for a in range(space["n_rec"])]
    return start


def assert_same_moves(space, start, cost):
    python, python_passes = C.improve(space, start, cost, compiled=False)
    op, op_passes = C.improve(space, start, cost, compiled=True)
    assert np.array_equal(python, op) and python_passes == op_passes
    return op


def test_packed_runs_give_each_columns_slots(small_0):
    """The op derives a column's slots from its runs: they are the cover matrix's slots."""
    _mip, space, _costs = small_0
    packed = dict(zip(csp_op.SPACE_FIELDS, csp_op.pack(space), strict=True))
    runs, dur, T = packed["col_runs"].numpy(), packed["col_dur"].numpy(), space["T"]
    for k in range(len(dur)):
        first = runs[k][runs[k] < T]
        slots = (first[:, None] + np.arange(dur[k])).reshape(-1)
        assert np.array_equal(np.sort(slots), np.sort(space["slots"][k])), k


@pytest.mark.parametrize("seed", SEEDS)
def test_op_makes_the_python_moves_on_the_tiny_instance(tmp_path, csp_tiny, seed):
    space, cost = tiny_case(tmp_path, csp_tiny, seed)
    start = latest_starts(space)
    better = assert_same_moves(space, start, cost)
    assert not np.array_equal(better, start)
    greedy, _ = C.price_greedy(space, cost, start)
    assert_same_moves(space, greedy, cost)


def test_op_makes_the_python_moves_on_small_0(small_0):
    """From the greedy and from the greedy with every once-off class left out: the five
    kinds of move all happen here (a chain shift and an ejection among them)."""
    _mip, space, costs = small_0
    for cost in costs:
        greedy, fell_back = C.price_greedy(space, cost, np.full(space["n"], -1))
        assert not fell_back
        better = assert_same_moves(space, greedy, cost)
        assert cost[better[better >= 0]].sum() < cost[greedy[greedy >= 0]].sum()
        recurring_only = greedy.copy()
        recurring_only[space["n_rec"] :] = -1
        assert_same_moves(space, recurring_only, cost)


def test_batch_in_parallel_is_each_scenario_alone(small_0):
    _mip, space, costs = small_0
    fallback = np.full(space["n"], -1)
    starts = np.array([C.price_greedy(space, cost, fallback)[0] for cost in costs])
    packed = csp_op.pack(space)
    torch.set_num_threads(2)
    batch, passes = csp_op.improve(packed, C.IMPROVE_SETTINGS, starts, costs)
    for start, cost, row, row_passes in zip(starts, costs, batch, passes, strict=True):
        alone, alone_passes = csp_op.improve(packed, C.IMPROVE_SETTINGS, start, cost)
        assert np.array_equal(alone[0], row) and alone_passes[0] == row_passes


def test_no_budget_left_returns_the_start(tmp_path, csp_tiny):
    space, cost = tiny_case(tmp_path, csp_tiny, 0)
    start = latest_starts(space)
    same, passes = C.improve(space, start, cost, 0.0, compiled=True)
    assert np.array_equal(same, start) and passes == 1


def test_bad_start_is_refused_by_class(tmp_path, csp_tiny):
    space, cost = tiny_case(tmp_path, csp_tiny, 0)
    start = latest_starts(space)
    start[1] = space["by_class"][0][0]  # class 1 at a column of class 0
    with pytest.raises(RuntimeError, match="class 1 starts at column"):
        C.improve(space, start, cost, compiled=True)
    start = latest_starts(space)
    start[0] = -1
    with pytest.raises(RuntimeError, match="recurring class 0 is unscheduled"):
        C.improve(space, start, cost, compiled=True)
    with pytest.raises(RuntimeError, match="cost must be float64"):
        csp_op.improve(csp_op.pack(space), C.IMPROVE_SETTINGS, start, cost[:-1])


def test_opcheck(tmp_path, csp_tiny):
    """The schema, the fake kernel and the dispatcher registrations (torch.library.opcheck);
    not its AOT dispatch test, which compares two runs' outputs: the move times differ."""
    space, cost = tiny_case(tmp_path, csp_tiny, 0)
    args = (
        csp_op.pack(space),
        torch.tensor(C.IMPROVE_SETTINGS, dtype=torch.float64),
        torch.from_numpy(latest_starts(space)[None]),
        torch.from_numpy(cost[None]),
        float("inf"),
        torch.zeros(len(csp_op.MOVES), dtype=torch.float64),
    )
    tests = ("test_schema", "test_autograd_registration", "test_faketensor")
    torch.library.opcheck(torch.ops.ldf_ip.csp_improve.default, args, test_utils=tests)
