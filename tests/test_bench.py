"""The benchmark suite runs (quick mode) and writes valid results. It asserts no timings."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("faststream")
pytest.importorskip("matplotlib")


@pytest.mark.slow
def test_bench_quick_writes_valid_json_and_a_chart(rabbit_url: str, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "bench.run", "--quick", "--rounds", "1", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parent.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["quick"] is True and results["machine"]["cpus"] >= 1
    names = [row["name"] for row in results["rows"]]
    for expected in ("single publish", "batch publish", "drain", "vs FastStream: publish", "vs FastStream: drain",
                     "routing: TopicTrie vs regex scan", "in-process", "memory: RSS", "idle drain",
                     "aio: publish from 50 tasks vs FastStream", "aio: drain, async typed handler vs FastStream"):
        assert any(name.startswith(expected) for name in names), expected
    cluster = [name for name in names if name.startswith("cluster: ")]  # when scripts/cluster.sh up ran
    assert len(cluster) == 9 or (not cluster and "skipping the cluster rows" in proc.stderr), cluster
    for row in results["rows"]:
        assert math.isfinite(row["pubsubpy"]), row
        if row["unit"] in ("msg/s", "keys/s", "ms") and "added time" not in row["name"]:
            assert row["pubsubpy"] > 0, row  # (an added time is a difference of two timings: noise may make it < 0)
        assert row["baseline"] is None or row["baseline"] > 0, row
        assert row["met"] in (True, False, None)
    assert (tmp_path / "throughput.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "row" in proc.stdout and "ratio" in proc.stdout, "the table is printed"
