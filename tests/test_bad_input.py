"""Bad input, corrupt files and diverged runs: a clear error naming the file or flag, never a
silently wrong table (the knapsack side and the shared files; CSP input in test_csp_data.py)."""

import os
import stat

import numpy as np
import pytest
import torch

import common
import knapsack_ldf as ks


def tiny(tmp_path, *extra, items=12):
    flags = f"--items {items} --instances 100 --epochs 1 --workers 1".split()
    return flags + ["--data-dir", str(tmp_path / "data"), *extra]


def label_folder(tmp_path):
    folder = ks.data_folder(tmp_path / "data", 12, 100, 0, ks.THESIS_VALUE_RANGE)
    return os.path.join(folder, "labels_combo")


# ---------------------------------------------------------------- caches tied to their inputs
def test_a_corrupt_label_file_is_named(tmp_path):
    ks.main(tiny(tmp_path, "--labels-only"))
    chunk = os.path.join(label_folder(tmp_path), "chunk_0000000.npz")
    with open(chunk, "r+b") as f:
        f.truncate(100)
    with pytest.raises(SystemExit, match="chunk_0000000.npz: corrupt label file.*delete it"):
        ks.main(tiny(tmp_path, "--labels-only"))


def test_labels_of_other_instances_are_refused(tmp_path):
    w, v, capacity = ks.make_instances(12, 40, seed=0)
    folder = tmp_path / "labels"
    ks.make_labels(w, v, capacity, folder, "ortools", workers=1, chunk=20)
    first, second = sorted(name for name in os.listdir(folder) if name.startswith("chunk_"))
    os.replace(folder / first, folder / second)  # one chunk copied over another
    with pytest.raises(SystemExit, match=f"{second}: these labels belong to other instances"):
        ks.make_labels(w, v, capacity, folder, "ortools", workers=1, chunk=20)


def test_temporaries_of_killed_writes_are_removed_and_files_get_the_usual_mode(tmp_path):
    folder = tmp_path / "labels"
    folder.mkdir()
    stale = folder / (common.TEMPORARY_PREFIX + "abc-chunk_0000000.npz")
    stale.write_bytes(b"x" * 1000)
    w, v, capacity = ks.make_instances(12, 10, seed=0)
    ks.make_labels(w, v, capacity, folder, "ortools", workers=1)
    assert not stale.exists()
    written = folder / "chunk_0000000.npz"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(written).st_mode) == 0o666 & ~umask


# ---------------------------------------------------------------- diverged runs
def test_a_diverged_run_exits_non_zero_and_reports_no_earlier_checkpoint(tmp_path):
    out = tmp_path / "run"
    ks.main(tiny(tmp_path, "--out", str(out), "--epochs", "2"))
    assert (out / "best_mu1.pt").exists()
    with pytest.raises(SystemExit) as stopped:
        ks.main(tiny(tmp_path, "--out", str(out), "--fresh", "--lambda0", "0", "--step", "1e308"))
    assert stopped.value.code not in (0, None)
    assert "--step" in str(stopped.value)
    assert not (out / "best_mu1.pt").exists()  # the earlier run's checkpoints are gone
    assert not (out / "last.pt").exists()  # and nothing non-finite was saved


# ---------------------------------------------------------------- flags
@pytest.mark.parametrize(
    "flags, message",
    [
        (["--seed", "-1"], "--seed"),
        (["--device", "bogus"], "--device"),
        (["--model", "fc", "--step", "1e-3"], "--step"),
        (["--labels-only", "--grid"], "different modes"),
        (["--instances", "5"], "--instances"),
        (["--range", "1"], "--range"),
    ],
)
def test_flags_that_cannot_work_are_errors(flags, message, capsys):
    with pytest.raises(SystemExit) as stopped:
        ks.parse_args(flags)
    assert stopped.value.code == 2
    assert message in capsys.readouterr().err


def test_flags_ignored_by_eval_only_are_errors(tmp_path, capsys):
    checkpoint = tmp_path / "x.pt"
    checkpoint.write_bytes(b"")
    with pytest.raises(SystemExit):
        ks.parse_args(["--eval-only", str(checkpoint), "--lr", "1e-3"])
    assert "--eval-only ignores --lr" in capsys.readouterr().err


# ---------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("content", [b"", b"garbage" * 10])
def test_unreadable_checkpoints_are_named(tmp_path, content):
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(content)
    with pytest.raises(SystemExit, match="model.pt: not a readable"):
        ks.main(["--eval-only", str(checkpoint)])


def test_a_checkpoint_of_another_problem_or_size_gets_one_sentence(tmp_path):
    other = tmp_path / "csp.pt"
    torch.save({"model": {}, "config": {}, "fingerprint": {"problem": "csp"}}, other)
    with pytest.raises(SystemExit, match="not a knapsack checkpoint"):
        ks.load_model(other)
    out = tmp_path / "fc"
    ks.main(tiny(tmp_path, "--model", "fc", "--out", str(out)))
    flags = tiny(
        tmp_path, "--pretrained", str(out / "fc.pt"), "--out", str(tmp_path / "pre"), items=14
    )
    with pytest.raises(SystemExit, match="trained for n=12 items, this run has n=14"):
        ks.main(flags)


def test_resume_names_the_settings_that_changed(tmp_path):
    out = tmp_path / "run"
    ks.main(tiny(tmp_path, "--out", str(out)))
    with pytest.raises(SystemExit, match=r"other settings \(k, lr\).*--fresh"):
        ks.main(tiny(tmp_path, "--out", str(out), "--lr", "1e-3", "--k", "5"))
    assert np.isfinite(common.load_checkpoint(out / "last.pt")["multiplier"])


def test_two_runs_on_one_label_folder_solve_each_chunk_once(tmp_path):
    """While one run holds the label folder, a second one waits; it then finds every chunk solved
    and solves nothing itself."""
    import subprocess
    import sys

    folder = tmp_path / "labels"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = (
        "import knapsack_ldf as ks\n"
        "w, v, c = ks.make_instances(40, 300, seed=2)\n"
        f"ks.make_labels(w, v, c, {str(folder)!r}, 'ortools', 1, chunk=100)\n"
        "print('done')\n"
    )
    w, v, capacity = ks.make_instances(40, 300, seed=2)
    with common.folder_lock(folder):
        second = subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=root,
            stderr=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert "waiting for another run" in second.stderr.readline()
        ks.solve_missing_chunks(w, v, capacity, folder, "ortools", 1, 100)
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0 and out.strip() == "done", err
    assert "labels (ortools)" not in err  # it solved nothing


def test_abbreviated_flags_get_the_same_checks(capsys):
    """argparse takes unique prefixes; the checks of which flags were given see them too."""
    with pytest.raises(SystemExit):
        ks.parse_args(["--eval-o", "missing.pt"])
    assert "--eval-only: no such file missing.pt" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ks.parse_args(["--model", "fc", "--ste", "1e-3"])
    assert "--step moves the LDF multiplier" in capsys.readouterr().err
