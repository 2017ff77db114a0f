"""CSP networks (issue 5): battery rebuild, the LDF term and its gradient, repaired decodes, a tiny
FC -> LDF run. Fixtures (csp_data, csp_tiny): conftest.py."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_ARCH, TINY_TRAINING

import csp_ldf as C
from bench.csp_inference import conv1d_net


@pytest.fixture(scope="module")
def ds(tmp_path_factory, csp_tiny):
    """Eight solver labels of the tiny instance over one week (Monday first), a one-off with a
    predecessor."""
    tmp = tmp_path_factory.mktemp("tiny")
    inst, base, solar, price = csp_tiny(tmp, days=7)
    solve_kw = dict(gap=0.0, time_limit=30)
    labels = tmp / "labels"
    C.generate_labels(
        inst, base, solar, price, labels, n=8, seed=1, workers=1, progress=False, **solve_kw
    )
    return dict(C.load_dataset(inst, base, solar, labels, seed=0), folder=labels)


def test_splits_stay_put_as_labels_grow_and_leaks_are_refused(ds, tmp_path):
    """A scenario's split follows from its index and the seed; a checkpoint trained on test
    scenarios is refused."""
    label = dict(np.load(ds["folder"] / "label_00000.npz"))
    for i in range(80):  # 80 copies of one label under scenario indices 0..79
        np.savez(tmp_path / f"label_{i:05d}.npz", **{**label, "index": np.array(i)})

    def split(limit):
        d = C.load_dataset(ds["inst"], ds["base"], ds["solar"], tmp_path, limit=limit)
        return {int(d["index"][r]): k for k, rows in d["split"].items() for r in rows}

    some = split(40)
    more = split(None)
    assert len(some) == 40 and len(more) == 80 and all(more[i] == k for i, k in some.items())
    assert 4 <= sum(k == "test" for k in more.values()) <= 14
    assert 4 <= sum(k == "val" for k in more.values()) <= 14
    config = {key: None for key in C.ARCH}
    leaky = dict(model={}, config=config, norm={}, scenarios=dict(train=list(range(8))))
    torch.save(leaky, tmp_path / "leaky.pt")
    run_dir = tmp_path / "run"
    args = C.parse_args(["--pretrained", str(tmp_path / "leaky.pt"), "--out", str(run_dir)])
    with pytest.raises(SystemExit, match="validation/test scenarios"):
        C.train(args, ds, run_dir)


def test_battery_rebuild_equals_checker_and_nu_is_zero_on_labels(ds):
    inst = ds["inst"]
    onehot = torch.nn.functional.one_hot(torch.as_tensor(ds["battery_state"]), 3).double()
    charge = C.battery_charge(onehot, torch.as_tensor(inst["cap"]), torch.as_tensor(inst["m"]))
    for i in range(len(ds["price"])):
        detail = {}
        decisions = [ds[key][i] for key in C.DECISION_KEYS]
        C.check_schedule(inst, ds["base"], ds["solar"], ds["price"][i], *decisions, detail=detail)
        assert np.allclose(charge[i].numpy(), detail["charge"])
    assert (ds["battery_state"] != C.IDLE).any()  # the labels do use the battery
    logits = 10.0 * onehot  # argmax = the label's states
    zeros = torch.zeros(len(logits), dtype=logits.dtype)
    assert torch.equal(C.battery_violation(logits, inst), zeros)


def test_ldf_term_positive_on_bad_schedule_and_gradient_reaches_logits(ds):
    inst = ds["inst"]
    T = ds["price"].shape[1]
    logits = 0.01 * torch.randn(3, 1, T, 3, dtype=torch.float64)
    logits[0, 0, :, C.DISCHARGE] += 0.2  # discharge all week: far below 0
    logits[1, 0, :, C.CHARGE] += 0.2  # charge a full battery: above capacity
    logits[2, 0, :, C.IDLE] += 0.2  # idle: feasible
    logits.requires_grad_(True)
    nu = C.battery_violation(logits, inst)
    assert (nu[:2] > 1).all() and nu[2] == 0
    nu.sum().backward()  # the surrogate (eq. 16) reaches the battery logits
    assert torch.isfinite(logits.grad).all() and (logits.grad[:2].abs().sum((1, 2, 3)) > 0).all()
    assert (logits.grad[:1, 0, :, C.DISCHARGE] > 0).any()  # raising discharge logits raises nu


def test_repaired_decodes_of_random_outputs_pass_the_checker(ds):
    torch.manual_seed(0)
    cfg = dict(conv=(4, 4, 4), kernels=(3, 3, 3), pool=8, mixer=(16, 16), head=(8, 8))
    model = C.make_model(ds, cfg)
    x = torch.randn(12, 3, ds["price"].shape[1])
    out = C.predict(model, x)
    for scale in (1.0, 30.0):  # near-uniform and confident random outputs
        noisy = {k: v + scale * torch.randn_like(v) for k, v in out.items()}
        noisy["recurring_start"] = noisy["recurring_start"].masked_fill(~model.mask_rec, C.NEG)
        noisy["oneoff_start"] = noisy["oneoff_start"].masked_fill(~model.mask_one, C.NEG)
        rows = np.arange(12) % len(ds["price"])
        *repaired, fell_back = C.repaired_decode(noisy, ds)
        for j, i in enumerate(rows):  # the checker itself: zero violations
            decisions = [r[j] for r in repaired]
            _, bad = C.check_schedule(
                ds["inst"], ds["base"], ds["solar"], ds["price"][i], *decisions
            )
            assert not any(bad.values()), bad
        res = C.evaluate_schedules(ds, rows, repaired)
        assert res["feasible_pct"] == 100 and not fell_back.any()
        assert all(v["pct_max"] == 0 for v in res["fam"].values())
        # the controllable cost: the labels' schedules score 1 on it; the repaired ones the
        # excess over the labels as a share of |label - (base - solar) cost|
        costs = [
            C.check_schedule(ds["inst"], ds["base"], ds["solar"], ds["price"][i], *decisions)[0]
            for i, decisions in zip(rows, zip(*repaired, strict=True), strict=True)
        ]
        excess = np.mean(costs - ds["objective"][rows])
        fixed = C.SLOT_MWH_PER_KW * ds["price"][rows] @ (ds["base"] - ds["solar"])
        size = np.mean(np.abs(ds["objective"][rows] - fixed))
        assert res["excess_mean"] == pytest.approx(excess) and excess > 0
        assert res["ar_controllable"] == pytest.approx(1 + excess / size)
        labelled = [ds[key][rows] for key in C.DECISION_KEYS]
        assert C.evaluate_schedules(ds, rows, labelled)["ar_controllable"] == pytest.approx(1)
        raw = C.evaluate_schedules(ds, rows, C.raw_decode(noisy))
        assert raw["fam"]["min or capacity"]["pct_mean"] > 0  # raw does violate
        assert raw["feasible_pct"] < 100


@pytest.mark.slow
def test_tiny_fc_then_ldf_end_to_end(ds, tmp_path, capsys, monkeypatch):
    clipped = []
    clip = torch.nn.utils.clip_grad_norm_

    def recording_clip(parameters, max_norm):
        clipped.append(max_norm)
        return clip(parameters, max_norm)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", recording_clip)
    fc_dir = ["--out", str(tmp_path / "fc"), "--save", str(tmp_path / "fc.pt")]
    fc = C.parse_args(["--model", "fc", "--epochs", "2", *fc_dir, *TINY_ARCH, *TINY_TRAINING])
    r = C.run(fc, ds)
    assert (tmp_path / "fc.pt").exists() and (tmp_path / "fc" / "last.pt").exists()
    ck = torch.load(tmp_path / "fc.pt", weights_only=False)
    assert ck["config"]["model"] == "fc" and ck["config"]["head"] == (8, 8) and "mean" in ck["norm"]
    steps = 2 * len(range(0, len(ds["split"]["train"]) - 1, 4))  # 2 epochs, batch 4
    assert r["fc"]["repaired"]["feasible_pct"] == 100
    for decode in ("improved-100ms", "improved"):  # improve keeps the classes feasible, no dearer
        improved = r["fc"][decode]
        assert improved["feasible_pct"] == 100 and improved["ms_max"] > 0
        assert improved["excess_mean"] <= r["fc"]["redispatched"]["excess_mean"] + 1e-9
    assert clipped and clipped == [1.0] * steps  # every step clipped
    ldf_dir = ["--out", str(tmp_path / "ldf"), "--save", str(tmp_path / "ldf.pt")]
    pretrained = ["--pretrained", str(tmp_path / "fc.pt")]
    ldf = C.parse_args([*pretrained, "--epochs", "2", *ldf_dir, "--step", "1", "--threads", "1"])
    assert ldf.model == "ldf" and ldf.lr == 1e-3 and ldf.step == 1 and ldf.max_grad_norm == 1.0
    r = C.run(ldf, ds)
    ck = torch.load(tmp_path / "ldf" / "last.pt", weights_only=False)
    assert ck["config"]["head"] == (8, 8)
    assert ck["state"]["epoch"] == 2 and ck["state"]["multiplier"] > 0
    assert r["ldf"]["repaired"]["feasible_pct"] == 100
    ldf.epochs = 3  # resume: one more epoch from last.pt
    C.run(ldf, ds)
    assert "resuming" in capsys.readouterr().out
    assert torch.load(tmp_path / "ldf" / "last.pt", weights_only=False)["state"]["epoch"] == 3
    assert "| ldf | repaired |" in C.markdown(r)


@pytest.mark.parametrize("dual", ["per-instance", "augmented", "dual-net"])
def test_ldf_dual_variants_train_and_resume(ds, tmp_path, dual):
    """--dual beyond the thesis' scalar on the CSP: the multipliers of the training scenarios
    (or the dual network's, for every scenario) stay >= 0 and move; a resumed run goes on from the
    dual state of its last.pt; a last.pt of another variant is refused."""
    fc = C.parse_args(
        ["--model", "fc", "--epochs", "1", "--out", str(tmp_path / "fc"),
         "--save", str(tmp_path / "fc.pt"), *TINY_ARCH, *TINY_TRAINING]
    )  # fmt: skip
    C.train(fc, ds, tmp_path / "fc")
    (tmp_path / "fc.pt").write_bytes((tmp_path / "fc" / "best_ar.pt").read_bytes())
    run = ["--pretrained", str(tmp_path / "fc.pt"), "--out", str(tmp_path / "ldf")]
    ldf = C.parse_args([*run, "--epochs", "1", "--dual", dual, *TINY_TRAINING])
    n_train = len(ds["split"]["train"])
    per_instance = dual in C.PER_INSTANCE_DUALS  # step resolved in train: STEP x scenarios
    assert ldf.step is None if per_instance else ldf.step == C.STEP
    C.train(ldf, ds, tmp_path / "ldf")
    last = torch.load(tmp_path / "ldf" / "last.pt", weights_only=False)
    assert last["fingerprint"]["dual"] == dual
    if per_instance:
        assert last["fingerprint"]["step"] == pytest.approx(C.STEP * n_train)
    assert "dual" in last and "dual" in last["state"]
    first = last["state"]["history"][-1]
    assert first["multiplier_min"] >= 0 and first["multiplier_max"] > 0
    ldf.epochs = 2
    C.train(ldf, ds, tmp_path / "ldf")
    resumed = torch.load(tmp_path / "ldf" / "last.pt", weights_only=False)
    assert resumed["state"]["epoch"] == 2 and resumed["state"]["history"][0] == first
    other = "augmented" if dual != "augmented" else "per-instance"
    with pytest.raises(SystemExit, match="other settings"):
        C.train(C.parse_args([*run, "--epochs", "3", "--dual", other]), ds, tmp_path / "ldf")


def test_conv2d_features_are_the_thesis_conv1d_and_bf16_inference_agrees(ds):
    """The (1, k) Conv2d on a channels-last input is the thesis' Conv1d stack; --bf16 inference
    moves few argmaxes."""
    torch.manual_seed(0)
    arch = dict(conv=(8, 16, 8), kernels=(8, 5, 3), pool=4, mixer=(32, 32), head=(16, 16))
    model = C.CSPNet(ds["inst"], ds["price"].shape[1], **arch).eval()
    batch_norms = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)
    for bn in (m for m in model.modules() if isinstance(m, batch_norms)):
        bn.running_mean.uniform_(-1, 1)  # batch norm that does something
        bn.running_var.uniform_(0.5, 2)
    x = torch.randn(6, 3, ds["price"].shape[1])
    with torch.no_grad():  # bench/csp_inference.py's copy with Conv1d / BatchNorm1d / MaxPool1d
        torch.testing.assert_close(model(x), conv1d_net(model)(x), rtol=1e-4, atol=1e-4)
    full = C.predict(model, x)
    half = C.predict(model.bfloat16(), x)
    assert all(half[k].dtype == torch.float32 for k in half)
    agree = full["battery_state"].argmax(-1) == half["battery_state"].argmax(-1)
    assert agree.float().mean() > 0.9


@pytest.mark.slow
@pytest.mark.parametrize(
    "bench",
    [
        ["csp_heads.py", "--head", "8,8", "--mixer", "16,16", "--batch", "4"],
        ["csp_inference.py", "--batch", "2", "--threads", "1"],
    ],
)
def test_benchmarks_run(bench, csp_data):
    """The CSP benchmarks run end to end at small sizes (their figures are read, not asserted:
    machines are noisy)."""
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, str(root / "bench" / bench[0]), "--reps", "1", *bench[1:]],
        cwd=root,
        env={**os.environ, "CSP_DATA_DIR": str(csp_data)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "speed-up" in out.stdout


@pytest.mark.slow
def test_the_learning_curve_keeps_its_test_scenarios_and_runs(csp_data, tmp_path):
    """bench/csp_learning_curve.py: each size trains on the training scenarios below it, tested
    on the same scenarios; a tiny network at one small size runs end to end."""
    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "bench"))
    import csp_learning_curve as curve

    index = np.arange(3000)
    split = dict(train=index[:2000], val=index[2000:2500], test=index[2500:])
    ds = {"index": np.concatenate([index[:1000], index[1000:] + 1000]), "split": split}
    small, whole = curve.restricted(ds, 500), curve.restricted(ds, None)
    assert list(small["split"]["train"]) == list(range(500))
    assert len(whole["split"]["train"]) == 2000  # every training scenario
    assert len(small["split"]["val"]) == len(whole["split"]["test"]) == 0  # all >= 2000 here
    assert curve.epochs_for(600, 16, 1601) == 6 and curve.epochs_for(5, 16, 10_000) == 1
    tiny = "--conv 4 --kernels 3 --pool 8 --mixer 16 --head 8,8"
    flags = ["--sizes", "60", "--fc-steps", "2", "--ldf-steps", "1", "--network", tiny]
    out = subprocess.run(
        [sys.executable, str(root / "bench/csp_learning_curve.py"), *flags,
         "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out")],
        cwd=root, env={**os.environ, "CSP_DATA_DIR": str(csp_data)},
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert "| 60 | " in out.stdout and "| ldf |" in out.stdout
    for name in ("learning_curve.md", "learning_curve.json", "learning_curve.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0
