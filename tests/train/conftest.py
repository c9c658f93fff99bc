import json

import pytest

from gadms.config import SynthConfig
from gadms.data.pipeline import Pair
from gadms.synth.benchmark import write_benchmark


@pytest.fixture(scope="session")
def synth_pairs(tmp_path_factory):
    """Train-split pairs of a small synthetic benchmark (identity = image index)."""
    root = write_benchmark(tmp_path_factory.mktemp("bench"), 12, 0, SynthConfig(), progress=False).root
    records = json.loads((root / "reid_raw.json").read_text())
    pairs = []
    for index, record in enumerate(r for r in records if r["split"] == "train"):
        for caption in record["captions"]:
            pairs.append(Pair(root / "imgs" / record["file_path"], caption, index))
    return pairs
