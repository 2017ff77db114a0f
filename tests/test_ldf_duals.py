"""The multipliers beyond the thesis' scalar (common.train_ldf's `dual`, issue 21), on a toy
problem: each variant's update against a hand computation, multipliers that stay >= 0, and resume
after an interrupt, bit-identical, for every variant."""

import math

import numpy as np
import pytest
import torch

import common

N_FEATURES = 3
N_INSTANCES = 16  # instance ids 0..15; the training set is 8 of them, in no particular order
TRAIN_ROWS = np.array([11, 3, 7, 0, 5, 9, 2, 14])
BATCH = 4  # two batches an epoch
# a violation per training instance that does not depend on the weights: dyadic numbers, so the
# float32 updates below are exact
FIXED_NU = np.zeros(N_INSTANCES)
FIXED_NU[TRAIN_ROWS] = [0.0, 0.5, 2.0, 0.0, 1.25, 0.0, 3.0, 0.25]
LAMBDA0 = 1.0
STEP = 0.5
RHO = 0.25
DUAL_LR = 0.01
ADAM_EPS = 1e-8  # torch.optim.Adam's default


class ToyDuals:
    """A linear model on fixed random data; the violation of instance i is FIXED_NU[i] (fixed)
    or relu(prediction_i) (depends on the weights)."""

    def __init__(self, fixed=True, interrupt_at_call=None):
        torch.manual_seed(0)
        self.x = torch.randn(N_INSTANCES, N_FEATURES)
        self.y = torch.randn(N_INSTANCES)
        self.model = torch.nn.Linear(N_FEATURES, 1)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-2)
        self.fixed = fixed
        self.interrupt_at_call = interrupt_at_call
        self.calls = 0
        self.multipliers_seen = []

    def violation(self, prediction, rows):
        if self.fixed:
            return torch.from_numpy(FIXED_NU[rows]).float() + 0.0 * prediction
        return torch.relu(prediction)

    def batch_loss(self, rows, multiplier):
        self.calls += 1
        if self.interrupt_at_call == self.calls:
            raise KeyboardInterrupt
        self.multipliers_seen.append(multiplier)
        prediction = self.model(self.x[rows]).squeeze(-1)
        label = (prediction - self.y[rows]) ** 2
        nu = self.violation(prediction, rows)
        return (label + multiplier * nu).mean(), label, nu

    def validate(self):
        with torch.no_grad():
            prediction = self.model(self.x).squeeze(-1)
            nu = self.violation(prediction, np.arange(N_INSTANCES))
        label = ((prediction - self.y) ** 2).numpy()
        return {"ar": 1.0 + float(label.mean()), "label_loss": label, "violation": nu.numpy()}

    def training_violations(self):
        with torch.no_grad():
            prediction = self.model(self.x[TRAIN_ROWS]).squeeze(-1)
            return self.violation(prediction, TRAIN_ROWS).numpy()


def train(problem, out, dual, fresh=True, separate_pass=True, **settings):
    options = {
        "ldf": True,
        "epochs": 2,
        "patience": 100,
        "batch_size": BATCH,
        "max_grad_norm": 1.0,
        "lambda0": LAMBDA0,
        "step": STEP,
        "mus": [0.0],
        "select": "mu0",
        "track": ["ar", "mu0"],
        "seed": 0,
        "saved": {},
        "fingerprint": {"toy": dual},
    }
    options.update(settings)
    if dual == "augmented":
        options["dual_options"] = {"rho": RHO}
    if dual == "dual-net":
        options["dual_options"] = {"features": problem.x, "dual_lr": DUAL_LR}
    saved = options.pop("saved")
    fingerprint = options.pop("fingerprint")
    resume = common.resume_checkpoint(out, fingerprint, fresh)
    return common.train_ldf(
        problem.model,
        problem.optimizer,
        TRAIN_ROWS,
        problem.batch_loss,
        problem.validate,
        out,
        common.LDFSettings(dual=dual, **options),
        saved=saved,
        fingerprint=fingerprint,
        resume=resume,
        training_violations=problem.training_violations if separate_pass else None,
    )


def lambdas(state):
    """lambda_i of the training instances, in the order of TRAIN_ROWS (per-instance, augmented)."""
    return state["dual"]["multiplier"]["weight"].flatten()


def as_float32(values):
    return torch.tensor(values, dtype=torch.float32)


@pytest.mark.parametrize("separate_pass", [True, False])
def test_per_instance_multipliers_rise_by_step_times_their_own_violation(tmp_path, separate_pass):
    problem = ToyDuals()
    state, _ = train(problem, tmp_path, "per-instance", separate_pass=separate_pass)
    nu = FIXED_NU[TRAIN_ROWS]
    # two epochs: lambda_i = 1 + 0.5 nu_i + 0.5 nu_i
    assert torch.equal(lambdas(state), as_float32(LAMBDA0 + 2 * STEP * nu))
    after_one = LAMBDA0 + STEP * nu
    assert state["history"][0]["multiplier"] == float(np.mean(after_one))
    assert state["history"][0]["multiplier_max"] == LAMBDA0 + STEP * 3.0
    assert state["history"][0]["multiplier_min"] == LAMBDA0
    # the loss of epoch 2 is mean(label + lambda_i nu_i) with each instance's own lambda_i
    second = state["history"][1]
    lagrangian_term = float(np.mean(after_one * nu))
    assert second["loss"] == pytest.approx(second["label_loss"] + lagrangian_term, rel=1e-6)
    assert all(multiplier == 0.0 for multiplier in problem.multipliers_seen)


def test_augmented_multipliers_rise_by_rho_and_the_loss_adds_the_penalty(tmp_path):
    problem = ToyDuals()
    state, _ = train(problem, tmp_path, "augmented")
    nu = FIXED_NU[TRAIN_ROWS]
    assert torch.equal(lambdas(state), as_float32(LAMBDA0 + 2 * RHO * nu))  # not by STEP
    first = state["history"][0]
    penalty_term = float(np.mean(LAMBDA0 * nu + RHO / 2 * nu**2))
    assert first["loss"] == pytest.approx(first["label_loss"] + penalty_term, rel=1e-6)


def test_per_instance_multipliers_are_projected_to_zero():
    dual = common.LagrangianDual("per-instance", TRAIN_ROWS, lambda0=LAMBDA0, step=1.0)
    slack = -np.array([3.0, 0.5, 0.0, 1.0, 0.0, 2.0, 0.25, 4.0])  # a constraint with room to spare
    dual.after_epoch(slack)
    expected = np.maximum(0.0, LAMBDA0 + slack)
    assert np.array_equal(dual.values(), expected)
    assert dual.values().min() == 0.0


def test_a_dual_network_step_is_one_adam_ascent_step_on_the_batch_lagrangian():
    features = torch.randn(N_INSTANCES, N_FEATURES)
    dual = common.LagrangianDual(
        "dual-net", TRAIN_ROWS, lambda0=LAMBDA0, step=0.0, features=features, dual_lr=DUAL_LR
    )
    # the output layer starts at weight 0 and bias softplus^-1(lambda0): every lambda is lambda0
    assert dual.values(np.arange(N_INSTANCES)) == pytest.approx(LAMBDA0, rel=1e-6)
    bias = dual.multiplier.output.bias.item()
    rows = np.sort(TRAIN_ROWS[:BATCH])
    nu = torch.from_numpy(FIXED_NU[rows]).float()
    dual.after_batch(nu, rows)
    # d/d bias of mean_i softplus(bias) nu_i = sigmoid(bias) mean(nu); Adam's first step moves a
    # parameter by lr * g / (|g| + eps)
    gradient = float(FIXED_NU[rows].mean()) / (1.0 + math.exp(-bias))
    expected = bias + DUAL_LR * gradient / (abs(gradient) + ADAM_EPS)
    assert dual.multiplier.output.bias.item() == pytest.approx(expected, rel=1e-6)


def test_a_dual_network_without_violations_does_not_move():
    features = torch.randn(N_INSTANCES, N_FEATURES)
    dual = common.LagrangianDual(
        "dual-net", TRAIN_ROWS, lambda0=LAMBDA0, step=0.0, features=features, dual_lr=DUAL_LR
    )
    before = {k: v.clone() for k, v in dual.multiplier.state_dict().items()}
    dual.after_batch(torch.zeros(BATCH), np.sort(TRAIN_ROWS[:BATCH]))
    for name, value in dual.multiplier.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_dual_network_multipliers_stay_nonnegative_under_descent():
    features = torch.randn(N_INSTANCES, N_FEATURES)
    dual = common.LagrangianDual(
        "dual-net", TRAIN_ROWS, lambda0=LAMBDA0, step=0.0, features=features, dual_lr=1.0
    )
    rows = np.sort(TRAIN_ROWS)
    for _ in range(50):  # large negative violations push lambda down as far as it goes
        dual.after_batch(torch.full((len(rows),), -1e3), rows)
    values = dual.values(np.arange(N_INSTANCES))
    assert values.min() >= 0.0
    assert values.max() < LAMBDA0  # it did descend


@pytest.mark.parametrize("dual", ["per-instance", "augmented", "dual-net"])
def test_multipliers_in_training_stay_nonnegative(tmp_path, dual):
    state, _ = train(ToyDuals(fixed=False), tmp_path, dual, epochs=3)
    assert all(row["multiplier_min"] >= 0.0 for row in state["history"])


def test_scalar_is_the_default_and_unchanged(tmp_path):
    default = ToyDuals(fixed=False)
    state_default, _ = train(default, tmp_path / "default", "scalar")
    resume = common.resume_checkpoint(tmp_path / "plain", {"toy": "scalar"}, True)
    plain = ToyDuals(fixed=False)
    state_plain, _ = common.train_ldf(  # no dual keyword: today's call
        plain.model,
        plain.optimizer,
        TRAIN_ROWS,
        plain.batch_loss,
        plain.validate,
        tmp_path / "plain",
        common.LDFSettings(
            ldf=True,
            epochs=2,
            patience=100,
            batch_size=BATCH,
            max_grad_norm=1.0,
            lambda0=LAMBDA0,
            step=STEP,
            mus=[0.0],
            select="mu0",
            track=["ar", "mu0"],
            seed=0,
        ),
        saved={},
        fingerprint={"toy": "scalar"},
        resume=resume,
    )
    assert "dual" not in state_plain and "dual" not in state_default
    for a, b in zip(default.model.parameters(), plain.model.parameters(), strict=True):
        assert torch.equal(a, b)
    # the scalar's multiplier is a float that batch_loss receives as such
    assert all(isinstance(m, float) for m in plain.multipliers_seen)
    assert history_without_times(state_default) == history_without_times(state_plain)


def history_without_times(state):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in state["history"]]


@pytest.mark.parametrize("dual", common.DUALS)
def test_resume_after_an_interrupt_is_bit_identical(tmp_path, dual):
    whole = ToyDuals(fixed=False)
    state_whole, _ = train(whole, tmp_path / "whole", dual, epochs=4)
    interrupted = ToyDuals(fixed=False, interrupt_at_call=6)  # the 2nd batch of epoch 3
    with pytest.raises(KeyboardInterrupt):
        train(interrupted, tmp_path / "parts", dual, epochs=4)
    assert common.load_checkpoint(tmp_path / "parts" / "last.pt")["epoch"] == 2
    resumed = ToyDuals(fixed=False)
    state_resumed, _ = train(resumed, tmp_path / "parts", dual, fresh=False, epochs=4)
    for a, b in zip(whole.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert history_without_times(state_whole) == history_without_times(state_resumed)
    if dual != "scalar":
        for name, value in state_whole["dual"]["multiplier"].items():
            assert torch.equal(value, state_resumed["dual"]["multiplier"][name]), name
        best = common.load_checkpoint(tmp_path / "parts" / "best_mu0.pt")
        assert best["dual"]["kind"] == dual  # every checkpoint carries the dual state


def test_unknown_dual_and_dual_without_ldf_are_refused(tmp_path):
    with pytest.raises(ValueError, match="expected one of"):
        train(ToyDuals(), tmp_path, "cooper")
    with pytest.raises(ValueError, match="without LDF"):
        train(ToyDuals(), tmp_path, "per-instance", ldf=False)


def test_knapsack_dual_flags():
    import knapsack_ldf as ks

    args = ks.parse_args(["--dual", "per-instance", "--instances", "1000"])
    thesis_step = ks.THESIS_SETTINGS["ldf"]["step"]
    assert args.step == thesis_step * 800  # the thesis' step times the training instances
    augmented = ks.parse_args(["--dual", "augmented", "--step", "0.5"])
    assert augmented.rho == 0.5  # the method of multipliers' default: rho = step
    assert ks.run_name(vars(augmented)) == "ldf-augmented"
    assert ks.run_name(vars(ks.parse_args([]))) == "ldf"
    # scalar runs keep their fingerprint (old last.pt files resume); the others name the dual
    assert "dual" not in ks.resume_fingerprint(vars(ks.parse_args([])))
    assert ks.resume_fingerprint(vars(augmented))["dual"] == "augmented"
    for flags in (
        ["--model", "fc", "--dual", "dual-net"],
        ["--rho", "1"],
        ["--dual", "per-instance", "--dual-lr", "0.1"],
    ):
        with pytest.raises(SystemExit):
            ks.parse_args(flags)
