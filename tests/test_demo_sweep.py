"""`unified-ar demo-sweep`: one demo per seed, a table of each seed's figures and the minimum."""
from __future__ import annotations

import copy
import json

from test_report import METRICS

from unified_ar.demo_sweep import main


def _metrics(vqa: float, exact: float, seconds: float) -> dict:
    m = copy.deepcopy(METRICS)
    m["total_seconds"] = seconds
    m["runs"]["toklip"]["vqa"]["overall"] = vqa
    m["runs"]["toklip"]["vqa"]["by_type"] = {"color": 0.95, "shape": 0.85}
    m["runs"]["toklip"]["t2i"]["exact"] = exact
    m["runs"]["toklip"]["t2i"]["color"] = 0.97
    return m


def test_each_seed_runs_one_demo_and_the_table_holds_the_minimum(tmp_path, monkeypatch, capsys):
    calls = []

    def fake_demo(argv):
        calls.append(argv)
        out = argv[argv.index("--out") + 1]
        seed = int(argv[argv.index("--seed") + 1])
        (tmp_path / out).mkdir(parents=True, exist_ok=True)
        figures = {0: (0.93, 0.9, 700.0), 1: (0.845, 1.0, 900.0)}[seed]
        (tmp_path / out / "metrics.json").write_text(json.dumps(_metrics(*figures)))
        return 0

    monkeypatch.setattr("unified_ar.demo.main", fake_demo)
    monkeypatch.chdir(tmp_path)
    assert main(["--out", "sweep", "--seeds", "0", "1", "--fast", "--comprehension-features", "both"]) == 0
    assert calls == [["--out", "sweep/seed0", "--fast", "--comprehension-features", "both", "--seed", "0"],
                     ["--out", "sweep/seed1", "--fast", "--comprehension-features", "both", "--seed", "1"]]
    table = (tmp_path / "sweep" / "sweep.md").read_text()
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines()[2:]}
    assert rows["0"].startswith("| 0 | 0.930 | 0.850 | 0.970 | 0.900 | 0.500 | 0.250 |")
    assert rows["0"].endswith("| 700 | toklip |")  # the vq run of METRICS misses its bars
    assert rows["1"].endswith("| 900 | none |")  # VQA 0.845 < 0.9
    assert rows["min"].startswith("| min | 0.845 | 0.850 | 0.970 | 0.900 |")
    assert table in capsys.readouterr().out
    saved = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert {(r["seed"], r["variant"]) for r in saved} == {(0, "toklip"), (0, "vq"), (1, "toklip"), (1, "vq")}


def test_an_unfinished_seed_is_one_line(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--seeds", "3", "--report-only"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "seed3/metrics.json: not found" in err
