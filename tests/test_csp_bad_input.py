"""Bad input on the CSP side (issue 14): a clear error naming the file and line or the flag, in
seconds; every solve within its time limit and stopped by Ctrl-C; label folders tied to their
inputs; no silently ignored flag. Fixtures (csp_data, csp_data_copy, csp_tiny, csp_tiny_text):
conftest.py."""

import contextlib
import json
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import common
import csp_ldf as C

ROOT = Path(__file__).resolve().parents[1]
PRICE = "price/PRICE_AND_DEMAND_202011_VIC1.csv"
PRICE_ROW = "VIC1,2020/11/03 02:00:00,3678.61,34.18,TRADE"  # line 101 of PRICE
FORECASTS = "thesis_inputs/Forecasts-sample.csv"
SECONDS_FOR_AN_ERROR = 60  # a bad input must be reported well within this (it was a hang)
SECONDS_FOR_CTRL_C = 10  # Ctrl-C must stop a solve within this
LABELS = dict(seed=4, workers=1, progress=False, gap=0.0, time_limit=30)


# ---------------------------------------------------------------- instance files
@pytest.mark.parametrize(
    "old, new, line, expected",
    [
        ("r 0 1 S 30 28 0", "r 0 1 S nan 28 0", 5, "nan is not a finite number"),
        ("r 0 1 S 30 28 0", "r 0 1 S inf 28 0", 5, "inf is not a finite number"),
        ("r 0 1 S 30 28 0", "r 0 1 S -30 28 0", 5, "the load must be >= 0 kW"),
        ("b 0 1 1", "b 0 -1 1", 2, "room counts must be >= 0"),
        ("a 0 1 S 10 88 100 50 0", "a 0 1 S 10 88 -100 50 0", 7, "value and penalty must be >= 0"),
        ("a 0 1 S 10 88 100 50 0", "a 0 1 S 10 88 100 -50 0", 7, "value and penalty must be >= 0"),
        ("s 0 0", "s 0 3", 3, "building 3 has no 'b' line"),
        ("c 0 0 30 40 0.81", "c 0 5 30 40 0.81", 4, "building 5 has no 'b' line"),
        ("c 0 0 30 40 0.81", "c 0 0 nan 40 0.81", 4, "nan is not a finite number"),
        ("c 0 0 30 40 0.81", "c 0 0 30 40 1.5", 4, "efficiency must be in (0, 1]"),
        ("c 0 0 30 40 0.81", "c 0 0 1e12 40 0.81", 4, "charge levels"),
        ("c 0 0 30 40 0.81", "c 3 0 30 40 0.81", 4, "a new battery id"),
        ("r 0 1 S 30 28 0", "r 0 2 S 30 28 0", 5, "needs 2 small rooms, the buildings have 1"),
    ],
)
def test_out_of_range_instance_values_name_the_line(
    tmp_path, csp_tiny_text, old, new, line, expected
):
    (tmp_path / "bad.txt").write_text(csp_tiny_text.replace(old, new))
    with pytest.raises(C.InputError) as err:
        C.read_instance(tmp_path / "bad.txt")
    assert f"bad.txt:{line}: expected" in str(err.value) and expected in str(err.value)


def test_header_counts_of_buildings_and_solar_arrays_are_checked(tmp_path, csp_tiny_text):
    (tmp_path / "bad.txt").write_text(csp_tiny_text.replace("ppoi 1 1 1", "ppoi 2 1 1"))
    with pytest.raises(C.InputError, match="says 2 buildings but 1 'b' lines"):
        C.read_instance(tmp_path / "bad.txt")


# ---------------------------------------------------------------- price and load files
@pytest.mark.parametrize(
    "value, expected",
    [
        ("nan", "column RRP is 'nan'"),
        ("inf", "column RRP is 'inf'"),
        ("-1e9", "market price floor and cap [-1000, 15000]"),
        ("1e6", "market price floor and cap [-1000, 15000]"),
        ("", "column RRP is ''"),
    ],
)
def test_a_bad_price_names_the_file_and_line(tmp_path, csp_data_copy, value, expected):
    bad_row = PRICE_ROW.replace(",34.18,", f",{value},")
    data = csp_data_copy(tmp_path, PRICE, PRICE_ROW, bad_row)
    with pytest.raises(C.InputError) as err:
        C.read_price(data)
    assert "PRICE_AND_DEMAND_202011_VIC1.csv:101: column RRP" in str(err.value)
    assert expected in str(err.value)


def test_the_real_prices_pass_negative_ones_included(csp_data):
    price = C.read_price(csp_data)
    assert price.min() < 0 and C.PRICE_FLOOR <= price.min() and price.max() <= C.PRICE_CAP


def test_a_price_row_out_of_sequence_is_named(tmp_path, csp_data_copy):
    data = csp_data_copy(tmp_path, PRICE, PRICE_ROW, PRICE_ROW.replace("02:00:00", "02:30:00"))
    with pytest.raises(C.InputError, match=r"VIC1.csv:101: .*SETTLEMENTDATE 2020/11/03 02:00:00"):
        C.read_price(data)


@pytest.mark.parametrize(
    "new, expected",
    [
        ("Building3,nan,", "Forecasts-sample.csv:3: Building3, column 2: 'nan'"),
        ("Building3,-329.5,", "Forecasts-sample.csv:3: Building3, column 2: '-329.5'"),
        ("Wind3,329.5,", "Forecasts-sample.csv:3: series 'Wind3'"),
    ],
)
def test_a_bad_load_names_the_file_line_and_column(tmp_path, csp_data_copy, new, expected):
    data = csp_data_copy(tmp_path, FORECASTS, "Building3,329.5373934,", new)
    with pytest.raises(C.InputError) as err:
        C.read_loads(data)
    assert expected in str(err.value)


def test_validate_with_a_nan_price_stops_in_seconds(tmp_path, csp_data_copy):
    """It hung for over 10 minutes, ignoring --time-limit and Ctrl-C."""
    data = csp_data_copy(tmp_path, PRICE, PRICE_ROW, PRICE_ROW.replace(",34.18,", ",nan,"))
    command = [sys.executable, "csp_ldf.py", "--mode", "validate", "--data-dir", str(data)]
    started = time.perf_counter()
    done = subprocess.run(
        [*command, "--time-limit", "30"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=SECONDS_FOR_AN_ERROR,
    )
    assert time.perf_counter() - started < SECONDS_FOR_AN_ERROR
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "VIC1.csv:101: column RRP is 'nan'" in done.stderr


# ---------------------------------------------------------------- the solver: time limit, Ctrl-C
def test_every_highs_run_obeys_the_time_limit(tmp_path, csp_tiny, monkeypatch):
    """The LP relaxation ran without a limit."""
    import highspy

    inst, base, solar, price = csp_tiny(tmp_path)
    limits = []
    run = highspy.Highs.run

    def recording_run(self):
        limits.append(self.getOptionValue("time_limit")[1])
        return run(self)

    monkeypatch.setattr(highspy.Highs, "run", recording_run)
    C.solve(C.build_mip(inst, base, solar), price, gap=0.0, time_limit=7)
    assert len(limits) >= 2 and all(0 < limit <= 7 for limit in limits), limits


def test_a_non_finite_price_never_reaches_the_solver(tmp_path, csp_tiny):
    inst, base, solar, price = csp_tiny(tmp_path)
    price[5] = np.nan
    with pytest.raises(C.InputError, match="not finite"):
        C.solve(C.build_mip(inst, base, solar), price, time_limit=5)


CTRL_C_SCRIPT = """
import signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
import csp_ldf as C
data = C.find_data_dir(sys.argv[1])
inst = C.read_instance(data / "instances/phase2_instance_small_0.txt")
base, solar = C.read_loads(data)
price = C.read_price(data)
mip = C.build_mip(inst, base, solar)
print("solving", flush=True)
try:
    C.solve(mip, price, gap=0.0, time_limit=300)
except KeyboardInterrupt:
    print("interrupted", flush=True)
    C.exit_interrupted()
print("finished", flush=True)
"""


@pytest.mark.parametrize("after", [0.5, 3.0])  # in the LP relaxation, in the MIP
def test_ctrl_c_stops_a_solve_within_seconds(csp_data, after):
    """Ctrl-C acted only when the solve had finished."""
    solver = subprocess.Popen(
        [sys.executable, "-c", CTRL_C_SCRIPT, str(csp_data)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert solver.stdout.readline().strip() == "solving", solver.stderr.read()
    time.sleep(after)
    sent = time.perf_counter()
    solver.send_signal(signal.SIGINT)
    try:
        out, err = solver.communicate(timeout=SECONDS_FOR_CTRL_C)
    except subprocess.TimeoutExpired:
        solver.kill()
        solver.communicate()
        pytest.fail(f"Ctrl-C did not stop the solve within {SECONDS_FOR_CTRL_C} s")
    assert time.perf_counter() - sent < SECONDS_FOR_CTRL_C
    assert out.strip() == "interrupted" and solver.returncode == C.EXIT_INTERRUPTED, err


# ---------------------------------------------------------------- label folders
@pytest.fixture(scope="module")
def labelled(tmp_path_factory, csp_tiny):
    """The tiny instance over three days, its series, and a folder with four of its labels."""
    tmp = tmp_path_factory.mktemp("labelled")
    inst, base, solar, price = csp_tiny(tmp, days=3)
    C.generate_labels(inst, base, solar, price, tmp / "labels", n=4, **LABELS)
    return dict(inst=inst, base=base, solar=solar, price=price, folder=tmp / "labels")


def copy_of(labelled, tmp_path):
    folder = tmp_path / "labels"
    shutil.copytree(labelled["folder"], folder)
    return folder


def test_labels_of_another_price_series_are_refused(labelled, tmp_path):
    """They joined the folder (one label -1.1e9 beside ~16,900)."""
    inst, base, solar, price = (labelled[key] for key in ("inst", "base", "solar", "price"))
    folder = copy_of(labelled, tmp_path)
    other = price * 1.5
    expected = "labels made with other inputs .* use another --labels-dir, or delete the folder"
    with pytest.raises(SystemExit, match=expected):
        C.generate_labels(inst, base, solar, other, folder, n=5, **LABELS)
    with pytest.raises(
        SystemExit, match="made from other inputs .* another --labels-dir, or delete"
    ):
        C.load_dataset(inst, base, solar, folder, price=other)
    with pytest.raises(SystemExit, match=r"other settings \(seed\)"):
        C.generate_labels(inst, base, solar, price, folder, n=5, **{**LABELS, "seed": 5})
    assert len(C.load_dataset(inst, base, solar, folder, price=price)["index"]) == 4


def test_a_label_file_of_other_inputs_is_named(labelled, tmp_path):
    inst, base, solar, price = (labelled[key] for key in ("inst", "base", "solar", "price"))
    folder = copy_of(labelled, tmp_path)
    other = tmp_path / "other"
    C.generate_labels(inst, base, solar, price * 1.5, other, n=1, **LABELS)
    shutil.copy(other / "label_00000.npz", folder / "label_00004.npz")
    expected = "label_00004.npz: this label was made from other inputs .* delete the file"
    with pytest.raises(SystemExit, match=expected):
        C.load_dataset(inst, base, solar, folder, price=price)
    with pytest.raises(SystemExit, match=expected):
        C.generate_labels(inst, base, solar, price, folder, n=5, **LABELS)


def test_labels_without_a_fingerprint_are_refused_by_name(labelled, tmp_path):
    inst, base, solar, price = (labelled[key] for key in ("inst", "base", "solar", "price"))
    folder = copy_of(labelled, tmp_path)
    path = folder / "label_00002.npz"
    with np.load(path) as z:
        old = {key: z[key] for key in z.files if key != "fingerprint"}
    np.savez(path, **old)
    with pytest.raises(SystemExit, match="label_00002.npz: a label without the fingerprint"):
        C.load_dataset(inst, base, solar, folder, price=price)
    config = json.loads((folder / "config.json").read_text())
    del config["fingerprint"]
    (folder / "config.json").write_text(json.dumps(config))
    path.unlink()  # a folder whose config.json has no fingerprint: settings differ
    with pytest.raises(SystemExit, match="config.json: no fingerprint of the inputs"):
        C.generate_labels(inst, base, solar, price, folder, n=5, **LABELS)


@pytest.mark.parametrize("content", [b"", b"garbage" * 10, "truncated"])
def test_a_corrupt_label_file_is_named(labelled, tmp_path, content):
    inst, base, solar, price = (labelled[key] for key in ("inst", "base", "solar", "price"))
    folder = copy_of(labelled, tmp_path)
    path = folder / "label_00001.npz"
    if content == "truncated":
        content = path.read_bytes()[:300]
    path.write_bytes(content)
    expected = "label_00001.npz: corrupt label file .*delete it and run --mode labels again"
    with pytest.raises(SystemExit, match=expected):
        C.load_dataset(inst, base, solar, folder, price=price)
    with pytest.raises(SystemExit, match=expected):
        C.generate_labels(inst, base, solar, price, folder, n=4, **LABELS)


def test_temporaries_of_killed_label_writes_are_removed(labelled, tmp_path):
    inst, base, solar, price = (labelled[key] for key in ("inst", "base", "solar", "price"))
    folder = copy_of(labelled, tmp_path)
    stale = folder / (common.TEMPORARY_PREFIX + "x1y2-label_00004.npz")
    stale.write_bytes(b"x" * 1000)
    C.generate_labels(inst, base, solar, price, folder, n=4, **LABELS)
    assert not stale.exists()


LABELS_SCRIPT = """
import pickle, sys
import csp_ldf as C
with open(sys.argv[1], "rb") as f:
    inst, base, solar, price = pickle.load(f)
settings = pickle.loads(bytes.fromhex(sys.argv[3]))
C.generate_labels(inst, base, solar, price, sys.argv[2], n=3, **settings)
print("done", flush=True)
"""


def test_two_runs_on_one_label_folder_solve_each_label_once(tmp_path, csp_tiny, monkeypatch):
    """While one run holds the label folder, a second one waits; it then finds every label
    solved and writes none itself."""
    inst, base, solar, price = csp_tiny(tmp_path, days=3)
    inputs = tmp_path / "inputs.pkl"
    inputs.write_bytes(pickle.dumps((inst, base, solar, price)))
    folder = tmp_path / "labels"
    with common.folder_lock(folder):
        second = subprocess.Popen(
            [
                sys.executable,
                "-c",
                LABELS_SCRIPT,
                str(inputs),
                str(folder),
                pickle.dumps(LABELS).hex(),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert "waiting for another run" in second.stderr.readline()
        with monkeypatch.context() as patch:  # this run goes ahead under the lock it holds
            patch.setattr(common, "folder_lock", lambda *_: contextlib.nullcontext())
            C.generate_labels(inst, base, solar, price, folder, n=3, **LABELS)
        written = {path.name: path.stat().st_mtime_ns for path in folder.glob("*.npz")}
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0 and out.strip() == "done", err
    assert len(written) == 4  # the reference and three labels, none written again
    assert {path.name: path.stat().st_mtime_ns for path in folder.glob("*.npz")} == written


# ---------------------------------------------------------------- checkpoints
@pytest.fixture(scope="module")
def ds(labelled):
    return C.load_dataset(*(labelled[key] for key in ("inst", "base", "solar", "folder")))


@pytest.mark.parametrize("content", [b"", b"garbage" * 10])
def test_an_unreadable_checkpoint_is_named(ds, tmp_path, content):
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(content)
    with pytest.raises(SystemExit, match="model.pt: not a readable checkpoint"):
        C.evaluate(ds, {"fc": checkpoint})


def test_a_knapsack_checkpoint_gets_one_sentence(ds, tmp_path):
    """It was reported as "trained on test scenarios"."""
    checkpoint = tmp_path / "knapsack.pt"
    knapsack = {"model": {}, "config": {}, "norm": {}, "fingerprint": {"problem": "knapsack"}}
    torch.save(knapsack, checkpoint)
    expected = "knapsack.pt: a knapsack checkpoint .*not a class scheduling checkpoint"
    with pytest.raises(SystemExit, match=expected):
        C.evaluate(ds, {"fc": checkpoint})
    args = C.parse_args(["--pretrained", str(checkpoint), "--out", str(tmp_path / "run")])
    with pytest.raises(SystemExit, match=expected):
        C.train(args, ds, tmp_path / "run")


def test_a_corrupt_last_checkpoint_is_named(ds, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "last.pt").write_bytes(b"garbage")
    args = C.parse_args(["--out", str(run_dir)])
    with pytest.raises(SystemExit, match="last.pt: not a readable"):
        C.train(args, ds, run_dir)


@pytest.mark.parametrize("content", [b"", b"garbage" * 10])
def test_an_unreadable_start_checkpoint_is_named(labelled, tmp_path, content, capsys):
    """--start-from: the checkpoint is read before any solve; a broken one stops the command with
    one sentence naming it."""
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(content)
    series = (labelled[key] for key in ("inst", "base", "solar", "price"))
    with pytest.raises(SystemExit, match="model.pt: not a readable checkpoint \\(--start-from\\)"):
        C.NetworkStarts(checkpoint, *series)
    flags = ["--mode", "labels", "--start-from", str(checkpoint), "--workers", "1"]
    labels = tmp_path / "labels"
    with pytest.raises(SystemExit, match="model.pt: not a readable checkpoint"):
        C.main([*flags, "--labels-dir", str(labels), "--dataset", str(tmp_path / "dataset")])
    assert not labels.exists()  # nothing solved, nothing written


def test_a_start_checkpoint_of_another_problem_or_instance_is_named(
    tmp_path, csp_tiny, csp_tiny_checkpoint
):
    """--start-from with a knapsack checkpoint, or a CSP one of another instance: of other shapes
    (fewer days) or of the same shapes (other class values), one sentence naming the file."""
    knapsack = tmp_path / "knapsack.pt"
    torch.save(
        {"model": {}, "config": {}, "norm": {}, "fingerprint": {"problem": "knapsack"}}, knapsack
    )
    inst, base, solar, price = csp_tiny(tmp_path, days=7)
    with pytest.raises(SystemExit, match="knapsack.pt: a knapsack checkpoint"):
        C.NetworkStarts(knapsack, inst, base, solar, price)
    name = csp_tiny_checkpoint.name
    fewer_days = csp_tiny(tmp_path, days=3)
    with pytest.raises(SystemExit, match=f"{name}: its weights do not fit instance tiny"):
        C.NetworkStarts(csp_tiny_checkpoint, *fewer_days)
    other_values = dict(inst, value=inst["value"] + 1)
    with pytest.raises(SystemExit, match=f"{name}: a network of another instance than tiny"):
        C.NetworkStarts(csp_tiny_checkpoint, other_values, base, solar, price)
    C.NetworkStarts(csp_tiny_checkpoint, inst, base, solar, price)  # its own instance


# ---------------------------------------------------------------- data folder and flags
def test_a_data_dir_without_instances_is_an_error(tmp_path, monkeypatch):
    """It fell back to another data folder without a word."""
    with pytest.raises(SystemExit, match=f"--data-dir {tmp_path}: no instances/ folder"):
        C.find_data_dir(str(tmp_path))
    monkeypatch.setenv("CSP_DATA_DIR", str(tmp_path))
    with pytest.raises(SystemExit, match=f"CSP_DATA_DIR {tmp_path}: no instances/ folder"):
        C.find_data_dir()


def test_the_default_data_folder_is_the_committed_one(tmp_path, monkeypatch):
    monkeypatch.delenv("CSP_DATA_DIR", raising=False)
    assert C.find_data_dir() == C.DEFAULT_DATA_DIR == Path(C.__file__).parent / "datasets/ieee_cis"
    monkeypatch.setattr(C, "DEFAULT_DATA_DIR", tmp_path)
    with pytest.raises(SystemExit, match="git checkout datasets/ieee_cis"):
        C.find_data_dir()


def test_a_corrupt_compressed_tsf_names_the_file(tmp_path):
    (tmp_path / "energy_tsf").mkdir()
    (tmp_path / "energy_tsf/nov_data.tsf.gz").write_bytes(b"not gzip")
    with pytest.raises(C.InputError, match="nov_data.tsf.gz: cannot read"):
        C.read_loads(tmp_path, "actual")


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--mode", "evaluate", "--pretrained", "missing.pt", "--shard", "1/2"],
            "--mode evaluate does not use --pretrained, --shard",
        ),
        (["--mode", "validate", "--epochs", "3"], "--mode validate does not use --epochs"),
        (["--mode", "validate", "--seed", "3"], "--mode validate does not use --seed"),
        (["--mode", "labels", "--checkpoints", "fc=fc.pt"], "does not use --checkpoints"),
        (["--mode", "train", "--workers", "2"], "--mode train does not use --workers"),
        (["--mode", "figure2", "--instance", "x"], "--mode figure2 does not use --instance"),
        (["--model", "fc", "--step", "1"], "--step: the LDF model's settings"),
        (["--seed", "-1"], "--seed: expected an integer >= 0"),
        (["--kernels", "0,0,0"], "--kernels: expected comma-separated positive integers"),
        (["--conv", "0,4,4"], "--conv: expected comma-separated positive integers"),
        (["--pool", "5000"], "--pool 5000: wider than the series"),
        (["--kernels", "2000,900,3"], "--kernels (2000, 900, 3): wider than the series"),
        (["--head", "8"], "--head: expected two widths"),
        (
            ["--pretrained", "missing.pt"],
            "no such file missing.pt; make the FC network first: python csp_ldf.py --model fc "
            "--save missing.pt",
        ),
        (["--mode", "evaluate", "--checkpoints", "fc=missing.pt"], "no such file missing.pt"),
        (["--start-from", "fc.pt"], "--mode train does not use --start-from"),
        (["--mode", "validate", "--start-from", "fc.pt"], "does not use --start-from"),
        (
            ["--mode", "labels", "--start-from", "missing.pt"],
            "--start-from: no such file missing.pt",
        ),
    ],
)
def test_flags_that_do_nothing_or_cannot_work_are_errors(flags, message, capsys):
    with pytest.raises(SystemExit) as stopped:
        C.parse_args(flags)
    assert stopped.value.code == 2
    assert message in capsys.readouterr().err


def test_a_start_checkpoint_beside_gurobi_is_an_error(tmp_path, capsys):
    checkpoint = tmp_path / "fc.pt"
    checkpoint.write_bytes(b"")
    with pytest.raises(SystemExit):
        C.parse_args(["--mode", "labels", "--start-from", str(checkpoint), "--solver", "gurobi"])
    assert "--start-from warm-starts HiGHS; --solver gurobi takes no start" in (
        capsys.readouterr().err
    )


def test_architecture_flags_beside_pretrained_are_errors(tmp_path, capsys):
    checkpoint = tmp_path / "fc.pt"
    checkpoint.write_bytes(b"")
    with pytest.raises(SystemExit):
        C.parse_args(["--pretrained", str(checkpoint), "--conv", "4,4,4"])
    assert "--pretrained takes the architecture from its checkpoint: drop --conv" in (
        capsys.readouterr().err
    )
