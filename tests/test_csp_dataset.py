"""The CSP label dataset (issue 19, item 2): scenarios rebuild from the stored STL parts with no
statsmodels run, the manifest records where the labels come from, a label is "optimal" only where
its gap is proven below 1e-4, and a format-1 dataset keeps loading and is converted by one
command that refuses STL parts which do not rebuild its scenarios."""

import json
import re

import numpy as np
import pytest

import csp_ldf as C

SOLVE = dict(gap=0.0, time_limit=30)
SEED = 3
COMMIT = re.compile(r"([0-9a-f]{40}(\+dirty)?|unknown)")


@pytest.fixture
def small_shards(monkeypatch):
    """Shards of 3 scenarios, so that a few labels make complete shards."""
    monkeypatch.setattr(C, "SHARD_SCENARIOS", 3)


@pytest.fixture
def labelled(tmp_path, csp_tiny, small_shards):
    """Six labels of the tiny instance, packed into two shards of a new dataset."""
    inst, base, solar, price = csp_tiny(tmp_path, days=2)
    out, dataset = tmp_path / "labels", tmp_path / "dataset"
    raw_files = {"instances/tiny.txt": "0" * 64}
    C.generate_labels(
        inst, base, solar, price, out, 6, seed=SEED, workers=1, progress=False,
        dataset=dataset, raw_files=raw_files, **SOLVE,
    )  # fmt: skip
    fresh = tmp_path / "fresh"  # a fresh clone: the dataset alone
    fresh.mkdir()
    return dict(inputs=(inst, base, solar), price=price, dataset=dataset, fresh=fresh)


def load(labelled, **kw):
    return C.load_dataset(
        *labelled["inputs"], labelled["fresh"], price=labelled["price"], seed=SEED,
        dataset=labelled["dataset"], **kw,
    )  # fmt: skip


def manifest_of(labelled):
    return json.loads((labelled["dataset"] / "manifest.json").read_text())


def no_stl(*_):
    raise AssertionError("STL was run: the dataset's stored parts should have been used")


def test_status_is_optimal_only_where_the_gap_is_proven_below_1e_4():
    assert C.label_status(0.0, 0.01) == "optimal"
    assert C.label_status(0.99e-4, 0.01) == "optimal"
    assert C.label_status(1e-4, 0.01) == "within_gap"
    assert C.label_status(0.01, 0.01) == "within_gap"
    assert C.label_status(0.0101, 0.01) == "time limit"
    # labels stored before "within_gap" said "optimal" for anything within the requested gap
    assert C.stored_status("optimal", 0.004) == "within_gap"
    assert C.stored_status("optimal", 0.5e-4) == "optimal"
    assert C.stored_status("time limit", 0.03) == "time limit"


def test_a_new_dataset_stores_its_stl_parts_and_provenance(labelled, monkeypatch):
    manifest = manifest_of(labelled)
    assert manifest["format"] == C.MANIFEST_FORMAT == 2
    assert manifest["raw_files"] == {"instances/tiny.txt": "0" * 64}
    for made in (manifest["created"], *(entry["made"] for entry in manifest["shards"])):
        assert COMMIT.fullmatch(made["commit"]), made["commit"]
        assert made["versions"]["numpy"] == np.__version__
        assert set(C.LIBRARIES) <= set(made["versions"])
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", made["date"])
    with np.load(labelled["dataset"] / manifest["stl"]["file"]) as z:
        stored = [z[key] for key in C.STL_KEYS]
    for part, computed in zip(stored, C.stl_parts(labelled["price"]), strict=True):
        assert np.array_equal(part, computed)
    with_stl = load(labelled)
    monkeypatch.setattr(C, "stl_parts", no_stl)  # loading needs numpy indexing only
    without_stl = load(labelled)
    assert list(without_stl["index"]) == list(range(6))
    assert np.array_equal(without_stl["price"], with_stl["price"])


def test_stl_parts_that_are_damaged_or_of_another_series_are_refused(labelled):
    manifest = manifest_of(labelled)
    stl = labelled["dataset"] / manifest["stl"]["file"]
    data = stl.read_bytes()
    stl.write_bytes(data[:-10] + bytes(10))
    with pytest.raises(SystemExit, match="stl.npz: its checksum differs"):
        load(labelled)
    stl.write_bytes(data)
    with pytest.raises(SystemExit, match="manifest.json: these labels were made from other"):
        C.load_dataset(
            *labelled["inputs"], labelled["fresh"], price=labelled["price"] + 1.0,
            dataset=labelled["dataset"],
        )  # fmt: skip
    # parts that add up to another series, with a checksum to match, are refused too
    parts = C.stl_parts(labelled["price"])
    shifted = C.stl_file_bytes((parts[0] + 1.0, parts[1], parts[2]))
    stl.write_bytes(shifted)
    manifest["stl"]["sha256"] = C.hashlib.sha256(shifted).hexdigest()
    (labelled["dataset"] / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SystemExit, match="stl.npz: these STL parts do not add up"):
        load(labelled)


def as_format_1(labelled):
    """Turn the dataset into what the first format wrote: no stl.npz, no provenance, "optimal"
    for every label within the requested gap."""
    manifest = manifest_of(labelled)
    (labelled["dataset"] / manifest["stl"]["file"]).unlink()
    for key in ("created", "raw_files", "stl"):
        del manifest[key]
    manifest["format"] = 1
    for entry in manifest["shards"]:
        del entry["made"]
        n = entry["count"]
        entry["labels"]["status"] = ["optimal"] * n
        entry["labels"]["gap"] = [0.0] * (n - 1) + [0.004]  # one label within the 1 % gap only
    (labelled["dataset"] / "manifest.json").write_text(json.dumps(manifest))
    return manifest


def test_a_format_1_dataset_loads_and_is_converted_by_one_command(labelled, monkeypatch, capsys):
    as_format_1(labelled)
    old = load(labelled)
    assert "is format 1 (no stored STL parts)" in capsys.readouterr().err
    assert list(old["index"]) == list(range(6))
    price = labelled["price"]
    fingerprint = manifest_of(labelled)["fingerprint"]
    raw_files = {"price/x.csv": "1" * 64}
    assert C.upgrade_dataset(labelled["dataset"], fingerprint, price, raw_files) == 6
    manifest = manifest_of(labelled)
    assert manifest["format"] == 2 and manifest["raw_files"] == raw_files
    assert manifest["created"] is None and COMMIT.fullmatch(manifest["converted"]["commit"])
    assert [entry["labels"]["status"] for entry in manifest["shards"]] == [
        ["optimal", "optimal", "within_gap"]
    ] * 2
    monkeypatch.setattr(C, "stl_parts", no_stl)
    new = load(labelled)
    assert np.array_equal(new["price"], old["price"])
    assert C.upgrade_dataset(labelled["dataset"], fingerprint, price, raw_files) == 0  # done


def test_the_conversion_refuses_stl_parts_that_rebuild_other_scenarios(labelled, monkeypatch):
    before = as_format_1(labelled)
    fingerprint = before["fingerprint"]
    stl_parts = C.stl_parts

    def other_statsmodels(price):
        trend, seasonal, residual = stl_parts(price)
        drift = np.linspace(0.0, 1.0, len(price))  # the same series, another split of it
        return trend - drift, seasonal, residual + drift

    monkeypatch.setattr(C, "stl_parts", other_statsmodels)
    with pytest.raises(SystemExit, match="price series, rebuilt with this statsmodels, differs"):
        C.upgrade_dataset(labelled["dataset"], fingerprint, labelled["price"], {})
    assert manifest_of(labelled) == before  # nothing was changed
    assert not (labelled["dataset"] / C.STL_FILE).exists()


def test_the_upgrade_mode_of_the_command_line(tmp_path):
    with pytest.raises(SystemExit, match="no such manifest"):
        C.main(["--mode", "upgrade-dataset", "--dataset", str(tmp_path)])
    with pytest.raises(SystemExit):
        C.parse_args(["--mode", "upgrade-dataset", "--workers", "2"])  # labels only
