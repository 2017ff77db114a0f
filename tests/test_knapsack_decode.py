"""knapsack_ldf.py beyond the thesis: repair, swaps, the set model and label-free training."""

import numpy as np
import torch

import knapsack_ldf as ks


# ---------------------------------------------------------------- beyond the thesis (issue 6)
def test_repair_is_feasible_and_never_worse_than_a_feasible_raw_prediction():
    rng = np.random.default_rng(0)
    w, v, capacity = ks.make_instances(30, 400, seed=5)
    prob = rng.random(w.shape)
    x = ks.repair(prob, w, v, capacity)
    assert ((x * w).sum(1) <= capacity + 1e-12).all()
    raw = (prob > 0.5).astype(float)
    feasible = (raw * w).sum(1) <= capacity
    assert feasible.any() and (~feasible).any()
    assert ((x * v).sum(1)[feasible] >= (raw * v).sum(1)[feasible] - 1e-12).all()
    assert (x[feasible] >= raw[feasible]).all()  # a feasible raw prediction is kept whole


def test_swaps_keep_feasibility_gain_value_and_end_in_a_local_optimum():
    rng = np.random.default_rng(1)
    w, v, capacity = ks.make_instances(30, 200, seed=6, value_range=1000)
    start = ks.repair(rng.random(w.shape), w, v, capacity)
    x = ks.improve_by_swaps(start, w, v, capacity, rounds=100)
    assert (ks.total_weight(x, w) <= capacity).all()
    assert ((x * v).sum(1) >= (start * v).sum(1)).all() and (
        (x * v).sum(1) > (start * v).sum(1)
    ).any()
    for row in range(len(x)):  # no single exchange or addition gains any more
        room = capacity[row] - ks.total_weight(x[row], w[row])
        chosen, unchosen = x[row] > 0, x[row] == 0
        assert not (w[row][unchosen] <= room).any()
        for i in np.flatnonzero(chosen):
            fits = unchosen & (w[row] - w[row][i] <= room)
            assert not (v[row][fits] > v[row][i]).any()


def test_swaps_close_greedys_gap_on_strongly_correlated_data():
    """Issue 12's weak class for greedy: the exchanges bring AR - 1 well under half of greedy's."""
    w, v, capacity = ks.make_instances(
        500, 30, seed=5, value_range=10**6, distribution="strongly-correlated"
    )
    exact = [ks.solve_core(*instance) for instance in zip(w, v, capacity, strict=True)]
    best = (np.array(exact) * v).sum(1)
    greedy = ks.greedy(w, v, capacity)
    swapped = ks.improve_by_swaps(greedy, w, v, capacity)
    greedy_gap = np.mean(best / (greedy * v).sum(1)) - 1
    swapped_gap = np.mean(best / (swapped * v).sum(1)) - 1
    assert greedy_gap > 1e-3 and swapped_gap < greedy_gap / 2


def test_set_model_is_permutation_equivariant_and_runs_on_any_n():
    torch.manual_seed(0)
    model = ks.make_model(20, "set").eval()
    w, v, capacity = ks.make_instances(20, 8, seed=2)
    raw = ks.features({"w": w, "v": v, "capacity": capacity})
    perm = torch.randperm(20)
    permuted = torch.cat([raw[:, :20][:, perm], raw[:, 20:40][:, perm], raw[:, 40:]], 1)
    with torch.no_grad():
        torch.testing.assert_close(model(permuted), model(raw)[:, perm], rtol=1e-5, atol=1e-5)
        w, v, capacity = ks.make_instances(57, 4, seed=3)
        assert model(ks.features({"w": w, "v": v, "capacity": capacity})).shape == (4, 57)
