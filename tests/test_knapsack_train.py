"""knapsack_ldf.py end to end: training (FC, LDF, pre-trained, --pretrain-epochs), resume,
the tables, bad flags, the grid and the class benchmarks (marked slow where they train)."""

import json
import os

import numpy as np
import pytest
import torch

import knapsack_ldf as ks


# ---------------------------------------------------------------- end to end
def tiny(tmp_path, *extra):
    return [
        "--items",
        "20",
        "--instances",
        "300",
        "--epochs",
        "3",
        "--workers",
        "1",
        "--data-dir",
        str(tmp_path / "data"),
        *extra,
    ]


@pytest.mark.slow
def test_end_to_end_table_matches_saved_predictions(tmp_path):
    out = tmp_path / "ldf"
    ks.main(tiny(tmp_path, "--out", str(out), "--step", "1e-3", "--precision", "fp32"))
    res = json.loads((out / "results.json").read_text())
    ck = torch.load(out / "ldf.pt", weights_only=False)
    # recompute the test metrics from the saved checkpoint, independently of the report code
    w, v, capacity = ks.make_instances(20, 300, seed=0)
    folder = ks.data_folder(tmp_path / "data", 20, 300, 0, ks.THESIS_VALUE_RANGE)
    x, _, _ = ks.make_labels(
        w, v, capacity, os.path.join(folder, "labels_ortools"), "ortools", workers=1
    )
    rows = ks.split(300, 0)["test"]
    model = ks.make_model(20)
    model.load_state_dict(ck["model"])
    model.eval()
    raw = torch.tensor(np.concatenate([w, v, capacity[:, None]], 1)[rows], dtype=torch.float32)
    with torch.no_grad():
        pred = (
            (torch.sigmoid(model((raw - ck["norm"]["mean"]) / ck["norm"]["std"])) > 0.5)
            .double()
            .numpy()
        )
    load, value, opt = (pred * w[rows]).sum(1), (pred * v[rows]).sum(1), (x[rows] * v[rows]).sum(1)
    violated = load > capacity[rows]
    ar = [
        max(a / b, b / a) if a > 0 and b > 0 else (1.0 if a == b else 2.0)
        for a, b in zip(value, opt, strict=True)
    ]
    assert res["test"]["all"]["n"] == len(rows) == 30
    assert res["test"]["all"]["pct_violated"] == pytest.approx(100 * violated.mean())
    assert res["test"]["all"]["ar"] == pytest.approx(np.mean(ar))
    assert sum(q["n"] for q in res["test"]["quintiles"]) == 30
    assert res["greedy"]["all"]["pct_violated"] == 0.0
    assert res["greedy"]["all"]["ar"] >= 1.0
    # the multiplier rose from lambda0 = 1 (test_multiplier_update_uses_training_violation checks
    # that it moved by exactly s * the hard-rounded training violations)
    hist = res["history"]
    assert hist[0]["multiplier"] > 1.0
    for name in [
        "fig1_surrogate.png",
        "training_curves.png",
        "last.pt",
        "best_ar.pt",
        "best_mu1.pt",
    ]:
        assert (out / name).exists(), name


def test_multiplier_update_uses_training_violation(tmp_path):
    out = tmp_path / "ldf"
    ks.main(
        tiny(tmp_path, "--out", str(out), "--step", "1e-2", "--epochs", "1", "--precision", "fp32")
    )
    ck = torch.load(out / "last.pt", weights_only=False)
    data = ks.load_data(ks.parse_args(tiny(tmp_path)))
    model = ks.make_model(20)
    model.load_state_dict(ck["model"])
    raw = ks.features(data)
    tr = data["split"]["train"]
    xhat = (ks.predict(model, (raw[tr] - ck["norm"]["mean"]) / ck["norm"]["std"]) > 0).float()
    nu_sum = ks.violation(xhat, raw[tr, :20], raw[tr, 40]).sum().item()
    assert ck["multiplier"] == pytest.approx(1.0 + 1e-2 * nu_sum, rel=1e-5)


def test_fused_adam_is_asked_for_and_a_setting_of_the_run(tmp_path):
    assert "fused_adam" not in ks.resume_fingerprint(vars(ks.parse_args([])))  # old runs resume
    assert ks.resume_fingerprint(vars(ks.parse_args(["--fused-adam"])))["fused_adam"] is True
    out = tmp_path / "fused"
    ks.main(tiny(tmp_path, "--model", "fc", "--out", str(out), "--epochs", "1", "--fused-adam"))
    groups = torch.load(out / "last.pt", weights_only=False)["optimizer"]["param_groups"]
    assert groups[0]["fused"] is True
    with pytest.raises(SystemExit, match="fused_adam.*--fresh"):
        ks.main(tiny(tmp_path, "--model", "fc", "--out", str(out), "--epochs", "2"))


@pytest.mark.slow
def test_pretrained_and_resume(tmp_path):
    fc = tmp_path / "fc"
    ks.main(tiny(tmp_path, "--model", "fc", "--out", str(fc), "--epochs", "2"))
    assert (fc / "fc.pt").exists()
    out = tmp_path / "pre"
    ks.main(tiny(tmp_path, "--pretrained", str(fc / "fc.pt"), "--out", str(out), "--epochs", "1"))
    ks.main(tiny(tmp_path, "--pretrained", str(fc / "fc.pt"), "--out", str(out), "--epochs", "2"))
    res = json.loads((out / "results.json").read_text())
    assert [h["epoch"] for h in res["history"]] == [1, 2]  # the second call resumed, not restarted
    assert res["model"] == "ldf-pretrained"
    with pytest.raises(SystemExit, match="--fresh"):
        ks.main(
            tiny(tmp_path, "--pretrained", str(fc / "fc.pt"), "--out", str(out), "--lr", "1e-3")
        )
    ks.main(
        ["--eval-only", str(out / "ldf.pt"), "--data-dir", str(tmp_path / "data"), "--workers", "1"]
    )
    evaluated = json.loads((out / "results_ldf.json").read_text())  # beside, not over, results.json
    assert evaluated["test"] == res["test"]
    assert json.loads((out / "results.json").read_text())["history"] == res["history"]


@pytest.mark.slow
def test_pretrain_epochs_trains_fc_then_ldf_from_it_in_one_command(tmp_path, capsys):
    out = tmp_path / "chain"
    flags = tiny(tmp_path, "--pretrain-epochs", "2", "--epochs", "1", "--out", str(out))
    ks.main(flags)
    printed = capsys.readouterr().out
    assert "| thesis fc |" in printed and "| thesis ldf-pretrained |" in printed
    fc = json.loads((out / "fc" / "results.json").read_text())
    assert fc["model"] == "fc" and fc["config"]["lr"] == ks.THESIS_SETTINGS["fc"]["lr"]
    assert [h["epoch"] for h in fc["history"]] == [1, 2]
    ldf = json.loads((out / "results.json").read_text())
    assert ldf["model"] == "ldf-pretrained-fc2"
    assert ldf["config"]["pretrained"] == str(out / "fc" / "fc.pt")
    assert ldf["config"]["step"] == ks.THESIS_SETTINGS["ldf-pretrained"]["step"]
    first = torch.load(out / "fc" / "fc.pt", weights_only=False)["model"]
    weights = torch.load(out / "fc" / "last.pt", weights_only=False)["model"]
    ks.main(flags)  # again: both runs resume at their last epoch and train no further
    assert json.loads((out / "results.json").read_text())["history"] == ldf["history"]
    again = torch.load(out / "fc" / "last.pt", weights_only=False)["model"]
    assert all(torch.equal(weights[name], again[name]) for name in weights)
    assert all(torch.equal(first[name], again[name]) for name in first) == (
        fc["selected_epoch"] == 2
    )
    default = ks.parse_args(["--pretrain-epochs", "15"])
    assert default.out == os.path.join("runs", "knapsack", "ldf-pretrained-fc15")
    assert default.pretrained == os.path.join(default.out, "fc", "fc.pt")


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    real = ks.batch_loss
    calls = {"n": 0}

    def poisoned(*a, **k):
        calls["n"] += 1
        loss, label, constraint = real(*a, **k)
        return (
            (loss * float("nan"), label, constraint)
            if calls["n"] > 2
            else (loss, label, constraint)
        )

    monkeypatch.setattr(ks, "batch_loss", poisoned)
    out = tmp_path / "nan"
    with pytest.raises(SystemExit) as stopped:
        ks.main(tiny(tmp_path, "--out", str(out), "--batch-size", "128"))  # 2 batches per epoch
    assert "--lr" in str(stopped.value) and "last good epoch" in str(stopped.value)
    assert torch.load(out / "last.pt", weights_only=False)["epoch"] == 1
    assert not (out / "results.json").exists() and not (out / "ldf.pt").exists()


@pytest.mark.parametrize(
    "flags",
    [
        ["--lr", "-1"],
        ["--items", "1"],
        ["--batch-size", "0"],
        ["--step", "nan"],
        ["--select-mu", "7"],
        ["--distribution", "similar-weights", "--range", "1000"],
        ["--distribution", "almost-strongly-correlated", "--range", "100"],
        ["--distribution", "no-such-class"],
        ["--pretrain-epochs", "3", "--model", "fc"],
        ["--pretrain-epochs", "3", "--grid"],
    ],
)
def test_bad_flags_are_argparse_errors(flags, capsys):
    with pytest.raises(SystemExit) as e:
        ks.parse_args(flags)
    assert e.value.code == 2
    assert flags[0] in capsys.readouterr().err


@pytest.mark.slow
def test_label_free_training_loss_falls_and_needs_no_training_labels(tmp_path):
    out = tmp_path / "free"
    ks.main(
        tiny(
            tmp_path,
            "--supervision",
            "none",
            "--arch",
            "set",
            "--out",
            str(out),
            "--epochs",
            "6",
            "--lr",
            "1e-3",
            "--step",
            "1e-3",
            "--violation",
            "relative",
            "--eval-items",
            "10",
            "40",
            "--eval-instances",
            "50",
        )
    )
    labels = ks.data_folder(tmp_path / "data", 20, 300, 0, ks.THESIS_VALUE_RANGE)
    assert not os.path.exists(os.path.join(labels, "labels_combo"))
    assert os.path.exists(os.path.join(labels, "labels_combo_valtest"))
    res = json.loads((out / "results.json").read_text())
    violations = [h["violation"] for h in res["history"]]  # the LP violation of the relaxation
    assert violations[-1] < violations[0] / 2
    assert res["model"] == "ldf-labelfree-set"
    assert res["test_repair"]["all"]["pct_violated"] == 0.0
    assert set(res["other_n"]) == {"10", "40"}
    ks.main(["--tradeoff", str(tmp_path)])
    assert (tmp_path / "tradeoff.png").exists()


@pytest.mark.slow
def test_grid_writes_one_table_of_all_runs(tmp_path, capsys):
    """Table 1 through the engine of the CSP labels: the trials run on a local Dask cluster of 2
    worker processes, each in a run folder of its own, then one table, best first."""
    pytest.importorskip("distributed")
    out = tmp_path / "grid"
    flags = tiny(tmp_path, "--grid", "--grid-lr", "1e-3", "--grid-step", "1e-3", "1e-2")
    flags += ["--grid-max-grad-norm", "1", "--epochs", "1", "--out", str(out)]
    flags[flags.index("--workers") + 1] = "2"
    ks.main(flags)
    assert "grid: 2 trials on Dask (2 local workers)" in capsys.readouterr().out
    rows = json.loads((out / "grid.json").read_text())
    assert {(r["lr"], r["step"]) for r in rows} == {(1e-3, 1e-3), (1e-3, 1e-2)}
    assert [r["val_value"] for r in rows] == sorted(r["val_value"] for r in rows)  # best first
    for step in ("0.001", "0.01"):
        assert (out / f"lr0.001_step{step}_gn1" / "ldf.pt").exists()
    assert (out / "grid.md").read_text().count("\n") == 4


@pytest.mark.slow
def test_class_benchmarks_run_at_small_sizes(tmp_path, capsys):
    """bench/knapsack_classes.py's networks and transfer tables end to end (tiny: their figures
    are read in bench/knapsack_classes.md, not asserted here)."""
    from bench import knapsack_classes

    flags = ["--classes", "strongly-correlated", "--ranges", "1000", "--instances", "30"]
    flags += ["--fc-epochs", "1", "--set-epochs", "1", "--data-dir", str(tmp_path / "data")]
    flags += ["--runs", str(tmp_path / "runs")]
    knapsack_classes.main(["networks", *flags])
    networks = capsys.readouterr().out
    assert "| strongly-correlated | " in networks and "greedy + swaps" in networks
    # the table's row is evaluated again after training: the same decisions as the run's own
    row = next(line for line in networks.splitlines() if line.startswith("| strongly-correlated"))
    for network in ("fc", "set"):
        run = json.loads(
            (tmp_path / "runs" / "strongly-correlated_R1000" / network / "results.json").read_text()
        )
        for key in ("test_raw", "test_repair", "test_swap"):
            assert f"| {run[key]['all']['ar']:.5f} ({run[key]['all']['pct_violated']:.1f}) " in row
    knapsack_classes.main(["transfer", *flags])  # reuses the set model trained above
    transfer = capsys.readouterr().out
    for items in (100, 500, 1000):
        assert f"| strongly-correlated | {items} | " in transfer
