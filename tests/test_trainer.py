"""The one LDF training loop (common.train_ldf), tested once for both problems on a toy problem:
multiplier arithmetic, selection, stopping, the NaN guard, resume after an interrupt."""

import os
import platform
import resource

import numpy as np
import pytest
import torch

import common

N_ROWS = 40
N_FEATURES = 3


class ToyProblem:
    """A linear model on fixed random data; the 'violation' is relu(prediction) so that it is
    positive and depends on the weights; validate() can be scripted per epoch."""

    def __init__(self, scripted=None, poison_at_call=None, interrupt_at_call=None):
        torch.manual_seed(0)
        self.x = torch.randn(N_ROWS, N_FEATURES)
        self.y = torch.randn(N_ROWS)
        self.model = torch.nn.Linear(N_FEATURES, 1)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-2)
        self.scripted = scripted
        self.poison_at_call = poison_at_call
        self.interrupt_at_call = interrupt_at_call
        self.calls = 0
        self.validations = 0
        self.violation_sums = []

    def batch_loss(self, rows, multiplier):
        self.calls += 1
        if self.interrupt_at_call == self.calls:
            raise KeyboardInterrupt
        prediction = self.model(self.x[rows]).squeeze(-1)
        label = (prediction - self.y[rows]) ** 2
        violation = torch.relu(prediction)
        loss = (label + multiplier * violation).mean()
        if self.poison_at_call is not None and self.calls >= self.poison_at_call:
            loss = loss * float("nan")
        return loss, label, violation

    def validate(self):
        self.validations += 1
        if self.scripted is not None:
            ar, mu0 = self.scripted[self.validations - 1]
            return {"ar": ar, "label_loss": np.array([mu0]), "violation": np.array([0.0])}
        with torch.no_grad():
            prediction = self.model(self.x).squeeze(-1)
        label = ((prediction - self.y) ** 2).numpy()
        return {
            "ar": 1.0 + float(label.mean()),
            "label_loss": label,
            "violation": torch.relu(prediction).numpy(),
        }

    def violation_sum(self):
        with torch.no_grad():
            total = torch.relu(self.model(self.x).squeeze(-1)).sum().item()
        self.violation_sums.append(total)
        return total


def train(problem, out, fresh=True, **settings):
    options = {
        "ldf": True,
        "epochs": 4,
        "patience": 100,
        "batch_size": 16,
        "max_grad_norm": 1.0,
        "lambda0": 1.0,
        "step": 0.1,
        "mus": [0.0],
        "select": "mu0",
        "track": ["ar", "mu0"],
        "seed": 0,
        "saved": {"config": {"toy": True}},
        "fingerprint": {"toy": 1},
    }
    options.update(settings)
    saved = options.pop("saved")
    fingerprint = options.pop("fingerprint")
    resume = common.resume_checkpoint(out, fingerprint, fresh)
    return common.train_ldf(
        problem.model,
        problem.optimizer,
        np.arange(N_ROWS),
        problem.batch_loss,
        problem.validate,
        out,
        common.LDFSettings(**options),
        saved=saved,
        fingerprint=fingerprint,
        resume=resume,
        violation_sum=problem.violation_sum,
    )


def test_multiplier_takes_one_subgradient_step_per_epoch(tmp_path):
    problem = ToyProblem()
    state, _ = train(problem, tmp_path, step=0.1, lambda0=1.0, epochs=3)
    expected = 1.0
    for total, row in zip(problem.violation_sums, state["history"], strict=True):
        expected = max(0.0, expected + 0.1 * total)
        assert row["multiplier"] == pytest.approx(expected)
    assert len(problem.violation_sums) == 3


def test_without_a_separate_pass_the_step_uses_the_epochs_batches(tmp_path):
    problem = ToyProblem()
    resume = common.resume_checkpoint(tmp_path, {}, True)
    state, _ = common.train_ldf(
        problem.model,
        problem.optimizer,
        np.arange(N_ROWS),
        problem.batch_loss,
        problem.validate,
        tmp_path,
        common.LDFSettings(
            ldf=True,
            epochs=1,
            patience=5,
            batch_size=16,
            max_grad_norm=0.0,
            lambda0=2.0,
            step=0.5,
            mus=[],
            select="ar",
            track=["ar"],
            seed=0,
        ),
        saved={},
        fingerprint={},
        resume=resume,
    )
    row = state["history"][0]
    epoch_sum = row["violation"] * N_ROWS  # the mean over the epoch's training rows
    assert state["multiplier"] == pytest.approx(2.0 + 0.5 * epoch_sum)


def test_fc_keeps_a_zero_multiplier(tmp_path):
    problem = ToyProblem()
    state, _ = train(problem, tmp_path, ldf=False, epochs=2)
    assert state["multiplier"] == 0.0 and problem.violation_sums == []


def test_selection_keeps_the_best_epoch_of_each_criterion(tmp_path):
    # validation AR best at epoch 2, the mu-loss best at epoch 3
    scripted = [(1.5, 9.0), (1.1, 8.0), (1.3, 2.0), (1.4, 5.0)]
    problem = ToyProblem(scripted=scripted)
    state, selected = train(problem, tmp_path, epochs=4)
    assert selected == os.path.join(tmp_path, "best_mu0.pt")
    assert common.load_checkpoint(tmp_path / "best_ar.pt")["epoch"] == 2
    assert common.load_checkpoint(selected)["epoch"] == 3
    assert common.load_checkpoint(selected)["value"] == 2.0
    assert state["best"]["ar"][:2] == (1.1, 2)


def test_stops_once_patience_epochs_improved_no_criterion(tmp_path):
    # AR improves at epoch 3, the mu-loss never after epoch 1: 2 more epochs of patience, then stop
    scripted = [(2.0, 1.0), (2.5, 3.0), (1.9, 3.0), (2.9, 3.0), (2.9, 3.0), (1.0, 0.0), (1, 0)]
    problem = ToyProblem(scripted=scripted)
    state, _ = train(problem, tmp_path, epochs=7, patience=2)
    assert state["stopped"] == "patience"
    assert state["epoch"] == 5
    again, _ = train(ToyProblem(scripted=scripted), tmp_path, fresh=False, epochs=7, patience=2)
    assert again["epoch"] == 5  # a resumed run that had stopped stays stopped


def test_a_nan_loss_stops_with_the_flags_to_change_and_keeps_the_last_good_epoch(tmp_path):
    problem = ToyProblem(poison_at_call=5)  # 3 batches an epoch: the 2nd epoch's 2nd batch
    with pytest.raises(common.TrainingDiverged, match="--lr") as caught:
        train(problem, tmp_path)
    assert "epoch 2" in str(caught.value)
    assert common.load_checkpoint(tmp_path / "last.pt")["epoch"] == 1


def test_non_finite_weights_are_never_saved(tmp_path):
    problem = ToyProblem()
    with pytest.raises(common.TrainingDiverged, match="non-finite"):
        train(problem, tmp_path, lambda0=0.0, step=1e308)
    assert not (tmp_path / "last.pt").exists()


def test_resume_after_an_interrupt_equals_an_uninterrupted_run(tmp_path):
    whole = ToyProblem()
    train(whole, tmp_path / "whole", epochs=4)
    interrupted = ToyProblem(interrupt_at_call=8)  # during epoch 3
    with pytest.raises(KeyboardInterrupt):
        train(interrupted, tmp_path / "parts", epochs=4)
    assert common.load_checkpoint(tmp_path / "parts" / "last.pt")["epoch"] == 2
    resumed = ToyProblem()
    state, _ = train(resumed, tmp_path / "parts", fresh=False, epochs=4)
    assert [row["epoch"] for row in state["history"]] == [1, 2, 3, 4]
    for a, b in zip(whole.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_resume_refuses_other_settings_and_fresh_removes_stale_checkpoints(tmp_path):
    train(ToyProblem(), tmp_path, epochs=1)
    with pytest.raises(SystemExit, match="other settings \\(toy\\).*--fresh"):
        train(ToyProblem(), tmp_path, fresh=False, fingerprint={"toy": 2})
    (tmp_path / "best_old.pt").write_bytes(b"stale")
    common.resume_checkpoint(tmp_path, {"toy": 2}, fresh=True)
    assert not any(name.endswith(".pt") for name in os.listdir(tmp_path))


def test_unreadable_checkpoints_are_named(tmp_path):
    broken = tmp_path / "last.pt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit, match="last.pt: not a readable"):
        common.resume_checkpoint(tmp_path, {}, fresh=False)


def test_a_killed_checkpoint_write_leaves_nothing_behind_on_the_next_run(tmp_path):
    stale = tmp_path / (common.TEMPORARY_PREFIX + "xyz-last.pt")
    stale.write_bytes(b"partial")
    train(ToyProblem(), tmp_path, epochs=1)
    assert not stale.exists()


def test_background_writes_keep_their_order_and_a_failed_write_is_raised(tmp_path):
    target = tmp_path / "checkpoint"
    with common.BackgroundWriter() as writer:
        for text in (b"first", b"second", b"third"):
            writer.write(target, text)
    assert target.read_bytes() == b"third"
    not_a_folder = tmp_path / "file"
    not_a_folder.write_bytes(b"")
    with pytest.raises(OSError), common.BackgroundWriter() as writer:
        writer.write(not_a_folder / "checkpoint", b"data")


def test_an_interrupted_run_leaves_its_last_epoch_complete_on_disk(tmp_path):
    interrupted = ToyProblem(interrupt_at_call=5)  # 3 batches an epoch: during epoch 2
    with pytest.raises(KeyboardInterrupt):
        train(interrupted, tmp_path, epochs=4)
    assert common.load_checkpoint(tmp_path / "last.pt")["state"]["epoch"] == 1
    assert not [name for name in os.listdir(tmp_path) if name.startswith(common.TEMPORARY_PREFIX)]


THESIS_FC = (1001, 2048, 1024, 500)  # the knapsack FC network at n = 500: inputs, widths
STEP_ROWS = 256  # the thesis' batch
WARM_STEPS = 3
MEASURED_STEPS = 5
FAULTS_PER_STEP = 2000  # measured here: 260-810 a step with it, ~8,650 without (mostly)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_freed_memory_is_reused_without_page_faults():
    assert common.keep_freed_memory()
    torch.manual_seed(0)
    widths = zip(THESIS_FC[:-1], THESIS_FC[1:], strict=True)
    model = torch.nn.Sequential(*[torch.nn.Linear(a, b) for a, b in widths])
    optimizer = torch.optim.Adam(model.parameters())
    x = torch.rand(STEP_ROWS, THESIS_FC[0])

    def step():
        optimizer.zero_grad(set_to_none=True)
        model(x).square().mean().backward()
        optimizer.step()

    for _ in range(WARM_STEPS):
        step()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(MEASURED_STEPS):
        step()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    assert faults < FAULTS_PER_STEP * MEASURED_STEPS
