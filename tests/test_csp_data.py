"""CSP data and MIP labels (issue 4): parser, checker, MIP vs brute force, STL scenarios,
resumable labels. Fixtures (csp_data, csp_tiny, csp_tiny_text): conftest.py."""

import hashlib
import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_WEEK

import csp_ldf as C


# ---------------------------------------------------------------- parser
def test_parser_reads_all_10_phase2_instances(csp_data):
    files = sorted((csp_data / "instances").glob("*.txt"))
    assert len(files) == 10
    for f in files:
        inst = C.read_instance(f)
        n_rec, n_oneoff = (50, 20) if "small" in f.name else (200, 100)
        assert (inst["n_rec"], inst["n_oneoff"], len(inst["cap"])) == (n_rec, n_oneoff, 2)
        assert inst["oneoff"].sum() == n_oneoff and (inst["dur"][:n_rec] <= 32).all()
        assert all(p < n_rec for ps in inst["prec"][:n_rec] for p in ps)
        assert all(n_rec <= p for ps in inst["prec"][n_rec:] for p in ps)
    small0 = C.read_instance(csp_data / "instances/phase2_instance_small_0.txt")
    assert (small0["n_small"], small0["n_large"]) == (10, 6)
    assert small0["prec"][1] == [0, 7, 14, 19, 27, 35, 43]
    oneoff_predecessors = (0, 1, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 16, 18)
    assert small0["prec"][52] == [50 + p for p in oneoff_predecessors]


@pytest.mark.parametrize(
    "old, new, line, expected",
    [
        ("r 0 1 S 30 28 0", "r 0 1 X 30 28 0", 5, "<S|L>"),
        ("r 1 1 L 20 30 1 0", "r 1 1 L 20 30 2 0", 6, "<#predecessors>"),
        ("a 1 1 L 40 90 80 20 1 0", "a 1 1 L 40 90 80 20 1 7", 8, "<value>"),
        ("c 0 0 30 40 0.81", "c 0 0 30 forty 0.81", 4, "<max power kW>"),
        ("b 0 1 1", "x 0 1 1", 2, "ppoi, b, s, c, r or a"),
        ("r 0 1 S 30 28 0", "r 0 1 S 30 40 0", 5, "<duration 1..32>"),
    ],
)
def test_parser_rejects_broken_copies(tmp_path, csp_tiny_text, old, new, line, expected):
    (tmp_path / "broken.txt").write_text(csp_tiny_text.replace(old, new))
    with pytest.raises(ValueError) as err:
        C.read_instance(tmp_path / "broken.txt")
    assert f"broken.txt:{line}: expected" in str(err.value) and expected in str(err.value)


def test_parser_rejects_wrong_counts(tmp_path, csp_tiny_text):
    (tmp_path / "short.txt").write_text(csp_tiny_text.replace("ppoi 1 1 1 2 2", "ppoi 1 1 1 2 3"))
    with pytest.raises(ValueError, match="short.txt: header"):
        C.read_instance(tmp_path / "short.txt")


# ---------------------------------------------------------------- checker
def test_checker_counts_known_violations(tmp_path, csp_tiny):
    inst, base, solar, price = csp_tiny(tmp_path)
    T = len(price)
    idle = np.full((1, T), C.IDLE, np.int8)
    ok = ([0, 32 + 0], [T, T], idle)  # r0 Monday 9:00, r1 Tuesday 9:00, no once-off
    cost, bad = C.check_schedule(inst, base, solar, price, *ok)
    assert not any(bad.values())
    grid = base - solar
    grid[36:64] += 30
    grid[96 + 36 : 96 + 66] += 20
    assert cost == pytest.approx(C.SLOT_MWH_PER_KW * price @ grid)
    battery = idle.copy()
    battery[0, :4] = C.DISCHARGE  # 30 kWh, 10 per slot: the 4th slot goes to -10
    battery[0, 4] = C.CHARGE
    solar2 = solar.copy()
    solar2[150] = 1000  # grid < 0 in one slot
    _, bad = C.check_schedule(inst, base, solar2, price, [0, 2], [T - 80, 5], battery)
    # r1 on Monday breaks precedence and shares the large room with a1 for 30 slots; a0 crosses
    # midnight; a1 scheduled while its predecessor a0 is not (a0 invalid); battery below 0 once;
    # grid < 0 once
    assert bad == dict(start=1, rooms=30, precedence=2, battery=1, power=1, oneoff=0)
    # a0 Monday 0:00-22:00 in r0's room
    _, bad = C.check_schedule(inst, base, solar, price, [0, 32], [0, T], idle)
    assert bad["rooms"] == 28 and bad["precedence"] == 0
    _, bad = C.check_schedule(inst, base, solar, price, [0, 5 * 32], [T], idle)
    assert bad["start"] == 1 and bad["oneoff"] == 1  # weekday 5 does not exist; a once-off missing


# ---------------------------------------------------------------- MIP against brute force
def test_battery_dispatch_equals_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(5):
        c = rng.normal(0.01, 0.02, 8)
        cap, m, eff = 20.0, 40.0, 0.81  # 2 steps of 10 kWh
        best = np.inf
        for seq in itertools.product([0, 1, 2], repeat=8):
            s = np.array(seq)
            charge = cap + np.cumsum(10.0 * ((s == 0) * 1.0 - (s == 2)))
            if (charge >= -1e-9).all() and (charge <= cap + 1e-9).all():
                best = min(best, c @ (m / 0.9 * (s == 0) - m * 0.9 * (s == 2)))
        cost, states = C.battery_dispatch(c, cap, m, eff)
        assert cost == pytest.approx(best)
        assert c @ (m / 0.9 * (states == 0) - m * 0.9 * (states == 2)) == pytest.approx(best)


def brute_force(inst, base, solar, price):
    """Every schedule of the tiny instance, priced by the checker; the battery, independent of the
    classes there (grid >= 0 cannot bind), by battery_dispatch (itself checked by brute force)."""
    T = len(price)
    rec = [[32 * d + o for d in range(2) for o in range(32 - dur + 1)] for dur in inst["dur"][:2]]
    one = [
        [d * 96 + s for d in range(2) for s in range(96 - dur + 1)] + [T] for dur in inst["dur"][2:]
    ]
    idle = np.full((1, T), C.IDLE, np.int8)
    costs = []
    for r0, r1, a0, a1 in itertools.product(*rec, *one):
        cost, bad = C.check_schedule(inst, base, solar, price, [r0, r1], [a0, a1], idle)
        if not any(bad.values()):
            costs.append(cost)
    battery = C.battery_dispatch(
        C.SLOT_MWH_PER_KW * price, inst["cap"][0], inst["m"][0], inst["eff"][0]
    )
    return min(costs) + battery[0]


def test_mip_equals_brute_force(tmp_path, csp_tiny):
    inst, base, solar, price = csp_tiny(tmp_path)
    best = brute_force(inst, base, solar, price)
    label = C.solve(C.build_mip(inst, base, solar), price, gap=0.0, time_limit=60)
    assert label["objective"] == pytest.approx(best, abs=1e-6)
    decisions = [label[key] for key in C.DECISION_KEYS]
    cost, bad = C.check_schedule(inst, base, solar, price, *decisions)
    assert not any(bad.values()) and cost == pytest.approx(best, abs=1e-6)
    assert label["gap"] <= 1e-9 and label["status"] == "optimal"


def test_the_highs_models_are_built_anew_after_model_reuses_solves(tmp_path, csp_tiny, monkeypatch):
    """A model re-priced for hundreds of scenarios slowed down; every MODEL_REUSES solves the MIP
    gets fresh HiGHS models, and the labels stay optimal."""
    monkeypatch.setattr(C, "MODEL_REUSES", 2)
    inst, base, solar, price = csp_tiny(tmp_path)
    mip = C.build_mip(inst, base, solar)
    models = []
    for scale in (1.0, 1.1, 1.2):
        label = C.solve(mip, price * scale, gap=0.0, time_limit=60)
        assert label["objective"] == pytest.approx(brute_force(inst, base, solar, price * scale))
        models.append(mip["highs"])
    assert models[0] is models[1] and models[2] is not models[1]


def test_mip_refuses_where_grid_can_bind(tmp_path, csp_tiny):
    """The batteries separate from the classes only while grid >= 0 cannot bind; elsewhere
    build_mip says so."""
    inst, base, solar, price = csp_tiny(tmp_path)
    solar = solar.copy()
    solar[40:60] = base[40:60] - 10  # less headroom than the battery can discharge
    with pytest.raises(ValueError, match="can bind"):
        C.build_mip(inst, base, solar)


def test_gurobi_backend_agrees_or_falls_back(tmp_path, csp_tiny):
    pytest.importorskip("gurobipy")
    inst, base, solar, price = csp_tiny(tmp_path)
    label = C.solve(C.build_mip(inst, base, solar), price, solver="gurobi", gap=0.0, time_limit=60)
    highs = C.solve(C.build_mip(inst, base, solar), price, gap=0.0)
    assert label["objective"] == pytest.approx(highs["objective"])


# ---------------------------------------------------------------- STL price scenarios
def test_stl_scenarios_keep_trend_seasonal_and_contiguous_blocks(tmp_path, csp_tiny):
    _, _, _, price = csp_tiny(tmp_path, days=4)
    parts = C.stl_parts(price)
    trend, seasonal, resid = parts
    assert np.allclose(trend + seasonal + resid, price)
    for block in (96, 30):
        scen, starts = C.price_scenario(parts, block, seed=3, index=7)
        noise = scen - trend - seasonal
        for p, s in zip(range(0, len(price), block), starts, strict=True):
            n = min(block, len(price) - p)
            assert np.allclose(
                noise[p : p + n], resid[s : s + n]
            )  # each block one contiguous piece
            assert s % C.DAY == p % C.DAY  # at the same time of day
        assert np.array_equal(scen, C.price_scenario(parts, block, 3, 7)[0])
        assert not np.array_equal(scen, C.price_scenario(parts, block, 3, 8)[0])


# ---------------------------------------------------------------- label generation resumes
def test_labels_resume_without_duplicates(tmp_path, csp_tiny):
    inst, base, solar, price = csp_tiny(tmp_path, days=3)
    kw = dict(n=5, seed=4, workers=1, progress=False, gap=0.0, time_limit=30)
    C.generate_labels(inst, base, solar, price, tmp_path / "a", limit=2, **kw)  # "killed" after 2
    assert len(list((tmp_path / "a").glob("label_*.npz"))) == 2
    (tmp_path / "a" / ".tmp-label_00002.npz").write_bytes(b"torn")  # a torn write
    summary = C.generate_labels(inst, base, solar, price, tmp_path / "a", **kw)
    C.generate_labels(inst, base, solar, price, tmp_path / "b", **kw)  # uninterrupted
    assert summary["labels"] == 5 and summary["status"] == {"optimal": 5}
    names = sorted(p.name for p in (tmp_path / "a").glob("label_*.npz"))
    assert names == [f"label_{i:05d}.npz" for i in range(5)]
    for i in range(5):
        a, b = (C.load_label(tmp_path / d / f"label_{i:05d}.npz") for d in "ab")
        assert a["index"] == i
        for k in ("price", "recurring_start", "oneoff_start", "battery_state", "objective", "gap"):
            assert np.array_equal(a[k], b[k]), k
    with pytest.raises(SystemExit, match="other settings"):
        C.generate_labels(inst, base, solar, price, tmp_path / "a", **{**kw, "seed": 5})


def test_labels_from_a_network_start_are_feasible_within_the_gap_and_say_so(
    tmp_path, csp_tiny, csp_tiny_checkpoint, monkeypatch
):
    """--start-from: labels warm-started by a network pass the checker within the gap and record
    their start, in the label file and in the dataset's manifest; the folder resumes from the
    reference label (harmless: the fingerprint is the same), whose labels record no start, as
    before."""
    monkeypatch.setattr(C, "SHARD_SCENARIOS", 3)
    inst, base, solar, price = csp_tiny(tmp_path, days=TINY_WEEK)
    starts = C.NetworkStarts(csp_tiny_checkpoint, inst, base, solar, price)
    monkeypatch.setattr(C, "START_BATCH", 1)  # two batches: 0, 1
    gap = 0.01
    out, dataset = tmp_path / "labels", tmp_path / "dataset"
    kw = dict(n=3, seed=4, workers=1, progress=False, gap=gap, time_limit=30, dataset=dataset)
    summary = C.generate_labels(inst, base, solar, price, out, limit=2, starts=starts, **kw)
    assert summary["start"] == {starts.name: 2}
    assert f"starts {{'{starts.name}': 2}}" in C.summary_text(summary)
    for i in range(2):
        label = C.load_label(out / f"label_{i:05d}.npz")
        decisions = [label[key] for key in C.DECISION_KEYS]
        cost, bad = C.check_schedule(inst, base, solar, label["price"], *decisions)
        assert not any(bad.values()) and cost == pytest.approx(label["objective"], rel=1e-9)
        assert label["gap"] <= gap and label["status"] in ("optimal", "within_gap")
        assert label["start"] == starts.name
    summary = C.generate_labels(inst, base, solar, price, out, **kw)  # resumed: the reference
    assert summary["start"] == {"reference": 1, starts.name: 2}
    label = C.load_label(out / "label_00002.npz")
    assert set(label) == {*C.LABEL_FILE_KEYS, "seed", "block", "fingerprint"}  # as before
    manifest = json.loads((dataset / "manifest.json").read_text())
    assert manifest["shards"][0]["labels"]["start"] == [starts.name, starts.name, "reference"]
    ds = C.load_dataset(inst, base, solar, tmp_path / "fresh", seed=4, price=price, dataset=dataset)
    assert list(ds["index"]) == [0, 1, 2]


# ---------------------------------------------------------------- the real data
def thesis_schedule(folder, inst):
    """The thesis' Gurobi solution (thesis_mip_results/small_i) in decision form."""
    starts = np.full(len(inst["dur"]), C.DAY * inst["days"])
    for line in (Path(folder) / "Schedule.txt").read_text().splitlines():
        fields = line.split()
        a = int(fields[1][1:-1])
        d = int(fields[3]) - 1
        hours, minutes = fields[4].split("-")[0].split(":")
        slot = 4 * int(hours) + int(minutes) // 15
        starts[a] = C.WEEK_OPTIONS * d + slot - C.NINE if a < inst["n_rec"] else d * C.DAY + slot
    soc = []
    for b in range(len(inst["cap"])):
        rows = (Path(folder) / f"Battery_{b}_Storage.txt").read_text().splitlines()
        soc.append([float(v) for row in rows for v in row.split(":")[1].split()])
    step = np.diff(np.c_[inst["cap"], soc], axis=1) / (C.SLOT_HOURS * inst["m"][:, None])
    step = np.round(step).astype(int)
    states = np.select([step > 0, step < 0], [C.CHARGE, C.DISCHARGE], C.IDLE).astype(np.int8)
    return starts[: inst["n_rec"]], starts[inst["n_rec"] :], states


def test_series_and_thesis_schedule_price_as_the_thesis(csp_data, thesis_results):
    price = C.read_price(csp_data)
    base, solar = C.read_loads(csp_data)
    assert price.shape == base.shape == solar.shape == (2880,) and (price[::2] == price[1::2]).all()
    forecasts = (csp_data / "thesis_inputs/Forecasts-sample.csv").read_text().split()
    raw = [r.split(",") for r in forecasts]
    raw_base = sum(np.array(r[1:], float) for r in raw if r[0].startswith("Building"))
    assert np.allclose(base[44:], raw_base[:-44]) and np.allclose(base[:44], raw_base[52:96])
    inst = C.read_instance(csp_data / "instances/phase2_instance_small_0.txt")
    schedule = thesis_schedule(thesis_results / "small_0", inst)
    cost, bad = C.check_schedule(inst, base, solar, price, *schedule)
    assert not any(bad.values()) and cost == pytest.approx(C.THESIS_SMALL0, abs=0.005)


def test_actual_loads_are_the_real_november_values(csp_data):
    base, solar = C.read_loads(csp_data, "actual")
    assert base.shape == solar.shape == (2880,)
    assert np.isfinite(base).all() and np.isfinite(solar).all()
    forecast, _ = C.read_loads(csp_data)
    assert not np.allclose(base, forecast) and 0.5 < base.mean() / forecast.mean() < 2
    # grid >= 0 cannot bind: the two batteries discharge at most 115.6 kW
    assert (base - solar).min() > 115.6


def test_committed_challenge_files_match_their_readme(csp_data):
    """datasets/ieee_cis/README.md lists every file with its SHA-256; the files are those bytes."""
    rows = re.findall(
        r"^\| `([^`]+)` \|.*\| `([0-9a-f]{64})`", (csp_data / "README.md").read_text(), re.M
    )
    files = sorted(str(p.relative_to(csp_data)) for p in csp_data.rglob("*") if p.is_file())
    assert sorted(name for name, _ in rows) == [f for f in files if f != "README.md"]
    for name, digest in rows:
        assert hashlib.sha256((csp_data / name).read_bytes()).hexdigest() == digest, name


def test_cli_help_and_shard_errors(capsys):
    with pytest.raises(SystemExit):
        C.parse_args(["--mode", "labels", "--shard", "3/2"])
    assert "--shard: expected k/n" in capsys.readouterr().err
    assert C.parse_args(["--mode", "labels", "--shard", "1/4"]).shard == (1, 4)
