"""The label set the CSP benches read: the committed dataset of one instance
(datasets/csp/<instance>-forecast-block96-seed<seed>) plus any newer labels in data/csp_labels,
the first max_labels of them (None: all), with the scenarios' splits of csp_ldf.py."""

import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import csp_ldf as C  # noqa: E402

INSTANCE = "phase2_instance_small_0"
LABELS_DIR = Path("data/csp_labels")  # csp_ldf.py --labels-dir's default


def load_labels(max_labels=None, seed=0, instance=INSTANCE, data_dir=None):
    """csp_ldf.load_dataset on the forecast loads, as `csp_ldf.py --max-labels` reads them."""
    data = C.find_data_dir(data_dir)
    price = C.read_price(data)
    inst = C.read_instance(data / "instances" / f"{instance}.txt")
    base, solar = C.read_loads(data, "forecast")
    name = f"{inst['name']}-forecast-block{C.DAY}-seed{seed}"
    dataset = Path(C.__file__).parent / C.DATASET_FOLDER / name
    return C.load_dataset(
        inst, base, solar, LABELS_DIR / name, seed, max_labels, price, dataset=dataset
    )
