"""CSP labels on Dask (issue 11): a real local cluster of 2 worker processes labels the tiny
instance's scenarios; a worker killed mid-run loses and duplicates nothing; complete blocks of
scenarios become dataset shards that training reads with no label folder (a fresh clone), and a
damaged shard or a price series that no longer rebuilds is refused by name."""

import json
import os
import signal
import threading
import time

import numpy as np
import pytest
from conftest import TINY_WEEK

import csp_ldf as C

pytest.importorskip("distributed")
pytestmark = pytest.mark.slow  # real clusters and solves
from dask.distributed import LocalCluster, WorkerPlugin  # noqa: E402

SOLVE = dict(gap=0.0, time_limit=30)
SLOW_SECONDS = 0.4  # each task waits this long first, so that the kill finds tasks running


class SlowLabels(WorkerPlugin):
    """Makes every label task on a worker (restarted ones too) take SLOW_SECONDS longer."""

    def setup(self, worker):
        import csp_ldf

        solve = csp_ldf.solve

        def slow_solve(*args, **kwargs):
            time.sleep(SLOW_SECONDS)
            return solve(*args, **kwargs)

        csp_ldf.solve = slow_solve


def pids_of_workers(client):
    return client.run(os.getpid)


@pytest.fixture
def small_shards(monkeypatch):
    """Shards of 3 scenarios, so that a few labels make complete shards."""
    monkeypatch.setattr(C, "SHARD_SCENARIOS", 3)


def test_a_killed_worker_loses_and_duplicates_nothing(tmp_path, csp_tiny, small_shards):
    inst, base, solar, price = csp_tiny(tmp_path, days=2)
    n = 8
    out, dataset = tmp_path / "labels", tmp_path / "dataset"
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster,
        cluster.get_client() as client,
    ):
        client.register_plugin(SlowLabels())
        pids = pids_of_workers(client)
        assert len(pids) == 2
        killed = threading.Event()

        def kill_one_worker_after_the_first_label():
            deadline = time.time() + 60
            while time.time() < deadline and not list(out.glob("label_0*.npz")):
                time.sleep(0.05)
            os.kill(next(iter(pids.values())), signal.SIGKILL)  # mid-run: other tasks in flight
            killed.set()

        killer = threading.Thread(target=kill_one_worker_after_the_first_label)
        killer.start()
        summary = C.generate_labels(
            inst,
            base,
            solar,
            price,
            out,
            n,
            seed=3,
            progress=False,
            dataset=dataset,
            cluster=cluster.scheduler_address,
            **SOLVE,
        )
        killer.join()
        assert killed.is_set()
        assert set(pids_of_workers(client).values()) != set(pids.values())  # one was restarted
    assert summary["labels"] == n and summary["this_run_labels"] == n
    names = sorted(path.name for path in out.glob("label_*.npz"))
    assert names == [f"label_{i:05d}.npz" for i in range(n)]  # each scenario once
    manifest = json.loads((dataset / "manifest.json").read_text())
    packed = C.packed_indices(manifest)
    assert packed == list(range(6))  # two complete shards of 3; scenarios 6, 7 stay in the folder
    assert [entry["file"] for entry in manifest["shards"]] == ["shard_00000.npz", "shard_00001.npz"]
    parts = C.stl_parts(price)
    for i in range(n):
        label = C.load_label(out / f"label_{i:05d}.npz")
        scenario, _ = C.price_scenario(parts, C.DAY, 3, i)
        assert np.array_equal(label["price"], scenario)
        decisions = [label[key] for key in C.DECISION_KEYS]
        cost, bad = C.check_schedule(inst, base, solar, scenario, *decisions)
        assert not any(bad.values()) and cost == pytest.approx(label["objective"], rel=1e-9)


def test_network_starts_go_to_the_workers(tmp_path, csp_tiny, csp_tiny_checkpoint):
    """--start-from on Dask: the starts are made in this process and sent with the tasks (the
    network stays here); the workers' labels record them."""
    inst, base, solar, price = csp_tiny(tmp_path, days=TINY_WEEK)
    starts = C.NetworkStarts(csp_tiny_checkpoint, inst, base, solar, price)
    out = tmp_path / "labels"
    with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=":0") as cluster:
        summary = C.generate_labels(
            inst, base, solar, price, out, 3, seed=3, progress=False,
            cluster=cluster.scheduler_address, starts=starts, **SOLVE,
        )  # fmt: skip
    assert summary["labels"] == 3 and summary["start"] == {starts.name: 3}
    for i in range(3):
        assert C.load_label(out / f"label_{i:05d}.npz")["start"] == starts.name


def label_in_process(tmp_path, csp_tiny, n, **kw):
    inst, base, solar, price = csp_tiny(tmp_path, days=2)
    folders = dict(out=tmp_path / "labels", dataset=tmp_path / "dataset")
    settings = dict(seed=3, workers=1, progress=False, **SOLVE, **kw)
    settings["dataset"] = folders["dataset"]
    summary = C.generate_labels(inst, base, solar, price, folders["out"], n, **settings)
    return (inst, base, solar, price), folders, summary


def test_training_reads_the_dataset_without_the_label_folder(tmp_path, csp_tiny, small_shards):
    inputs, folders, summary = label_in_process(tmp_path, csp_tiny, 7)
    assert summary["in_dataset"] == 6 and summary["labels"] == 7
    for key in ("seconds_mean", "gap_mean", "gap_controllable_median", "this_run_labels_per_hour"):
        assert np.isfinite(summary[key]), key
    text = C.summary_text(summary)
    assert text.startswith("7 labels (6 in the dataset's shards); seconds per label mean")
    assert "this run: 7 labels with 1 worker(s)" in text
    with_folder = C.load_dataset(*inputs[:3], folders["out"], price=inputs[3])
    (folders["out"] / "../fresh").mkdir()
    fresh = folders["out"] / "../fresh"  # a fresh clone: the dataset alone
    ds = C.load_dataset(*inputs[:3], fresh, price=inputs[3], dataset=folders["dataset"])
    assert list(ds["index"]) == list(range(6))
    for key in ("price", "recurring_start", "oneoff_start", "battery_state"):
        assert np.array_equal(ds[key], with_folder[key][:6]), key
    # the manifest keeps dollars to 1e-4 and gaps to 6 digits
    np.testing.assert_allclose(ds["objective"], with_folder["objective"][:6], rtol=0, atol=1e-4)
    np.testing.assert_allclose(ds["gap"], with_folder["gap"][:6], rtol=1e-5, atol=1e-12)
    # labelling resumes from the dataset into the fresh folder: only scenarios 6.. are solved
    inst, base, solar, price = inputs
    more = C.generate_labels(
        inst, base, solar, price, fresh, 9, seed=3, workers=1, progress=False,
        dataset=folders["dataset"], **SOLVE,
    )  # fmt: skip
    assert more["this_run_labels"] == 3 and more["in_dataset"] == 9
    assert sorted(path.name for path in fresh.glob("label_*.npz")) == [
        f"label_{i:05d}.npz" for i in range(6, 9)
    ]


def test_a_damaged_shard_or_another_price_series_is_refused(tmp_path, csp_tiny, small_shards):
    inputs, folders, _ = label_in_process(tmp_path, csp_tiny, 3)
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    shard = folders["dataset"] / "shard_00000.npz"
    data = shard.read_bytes()
    shard.write_bytes(data[:-10] + bytes(10))
    with pytest.raises(SystemExit, match="shard_00000.npz: its checksum differs"):
        C.load_dataset(*inputs[:3], fresh, price=inputs[3], dataset=folders["dataset"])
    shard.write_bytes(data)
    manifest_path = folders["dataset"] / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["shards"][0]["labels"]["price_hash"][1] = "0" * 16
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(SystemExit, match="shard_00000.npz: scenario 1's price series"):
        C.load_dataset(*inputs[:3], fresh, price=inputs[3], dataset=folders["dataset"])
    with pytest.raises(SystemExit, match="manifest.json: these labels were made from other"):
        C.load_dataset(*inputs[:3], fresh, price=inputs[3] * 1.1, dataset=folders["dataset"])
