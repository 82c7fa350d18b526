import csv
import random
from pathlib import Path

import pytest

from offramp.demo.data import demo_paths

from helpers import run_cli, write_csv


def _sample(path: Path, per_class: int, seed: int) -> list[tuple[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = [(r["text"], r["label"]) for r in csv.DictReader(f)]
    rng = random.Random(seed)
    out = []
    for label in sorted({r[1] for r in rows}):
        group = [r for r in rows if r[1] == label]
        out += rng.sample(group, min(per_class, len(group)))
    rng.shuffle(out)
    return out


@pytest.fixture(scope="session")
def inbox_sample(tmp_path_factory) -> tuple[Path, Path]:
    """A small real sample of the bundled inbox: (train.csv, test.csv)."""
    train, test, _ = demo_paths()
    d = tmp_path_factory.mktemp("inbox")
    return (write_csv(d / "train.csv", _sample(train, 100, 1)), write_csv(d / "test.csv", _sample(test, 40, 2)))


@pytest.fixture(scope="session")
def trained_dir(inbox_sample, tmp_path_factory) -> Path:
    """A model directory trained by the real CLI on the sample."""
    out = tmp_path_factory.mktemp("models") / "m"
    r = run_cli("train", str(inbox_sample[0]), "--out", str(out), "--time-limit", "20", "--quiet")
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="session")
def fast_model(inbox_sample, tmp_path_factory) -> Path:
    """A fast-tier model directory trained by the real CLI on the sample."""
    d = tmp_path_factory.mktemp("fast") / "model"
    r = run_cli("train", str(inbox_sample[0]), "--out", str(d), "--quality", "fast", "--quiet")
    assert r.returncode == 0, r.stderr
    return d
