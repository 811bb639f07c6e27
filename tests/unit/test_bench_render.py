"""bench_e2e's rendering from a saved run (``--from-json``): the generated sections land
between their markers in both result files, the prose around them stays, and the figures
are the run's. No measuring, no root: benchmarks/e2e.json is the run RESULTS*.md quote."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import bench_e2e

SAVED = Path(bench_e2e.ROOT) / "benchmarks" / "e2e.json"


def test_from_json_fills_both_result_files(tmp_path: Path) -> None:
    doc = json.loads(SAVED.read_text())
    results = tmp_path / "RESULTS_e2e.md"
    summary = tmp_path / "RESULTS.md"
    results.write_text(f"# title\n\n{bench_e2e.BEGIN}\nold\n{bench_e2e.END}\n\nhand-written\n")
    summary.write_text(f"intro\n\n{bench_e2e.SUM_BEGIN}\nold\n{bench_e2e.SUM_END}\n\nprose\n")
    rc = bench_e2e.main(["--from-json", str(SAVED), "--results", str(results),
                         "--summary", str(summary), "--plot", str(tmp_path / "p.png")])
    assert rc == 0
    r, s = results.read_text(), summary.read_text()
    assert r.startswith("# title\n") and r.rstrip().endswith("hand-written") and "\nold\n" not in r
    assert s.startswith("intro\n") and s.rstrip().endswith("prose") and "\nold\n" not in s
    tcp1 = doc["worlds"]["vxdp"]["metrics"]["tcp1_gbps"]
    for text in (r, s):
        assert f"| {tcp1:.2f} |" in text                 # the run's own figure
        for key, st in doc["goals"].items():              # the run's goals, as measured
            label = st.get("label") or bench_e2e.METRICS[key][0]
            assert f"| {label} {st['goal']}" in text
    assert "Offloads (`vxdp stats`" in r                   # per-VTEP offload counters
    if doc.get("latency"):                                 # the floor: the relay's world
        assert "added per crossing" in r and "minimal C relay" in r


def test_summary_needs_its_markers(tmp_path: Path) -> None:
    """A file without the markers is not touched (RESULTS.md is mostly hand-written)."""
    doc = json.loads(SAVED.read_text())
    f = tmp_path / "RESULTS.md"
    f.write_text("no markers here\n")
    assert bench_e2e.write_summary(doc, f) is False
    assert f.read_text() == "no markers here\n"
