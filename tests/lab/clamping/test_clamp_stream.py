"""Issue 23 item 2: clamp_sweep streams its rows to disk per prompt, so the rows it holds stay bounded by a
batch plus one prompt's conditions however large the grid, while the table and generations come out in
prompt order, whole, with no spool left behind."""

import csv
import json

import pytest

from neurotrace import ClampSweepRequest, run_clamp_sweep
from neurotrace.lab.clamping import run as clamp_run
from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.lab.progress import Reporter
from neurotrace.testing.planted_clamp import build_repetition_model

WORDS = ["the cat", "a", "paris is the capital of", "one two three", "x", "hello there my friend"]


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return build_repetition_model(tmp_path_factory.mktemp("planted") / "m", layer=1, index=3)


def _sweep(tmp_path, planted, monkeypatch, n_prompts: int):
    sinks = []

    class Watched(clamp_run.RowSink):   # the real sink; the test only keeps a handle on it
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            sinks.append(self)

    monkeypatch.setattr(clamp_run, "RowSink", Watched)
    lab = Lab(LabSettings(runs_dir=tmp_path / f"runs{n_prompts}"))
    prompts = [f"{WORDS[i % len(WORDS)]} {i}" for i in range(n_prompts)]
    request = ClampSweepRequest(model=str(planted), neurons=["1:3"], prompts=prompts, max_new_tokens=6,
                                values=[0, None, 10], controls=0, batch_size=4)
    result = run_clamp_sweep(request, lab=lab, reporter=Reporter())
    return lab, result, prompts, sinks[0]


def test_rows_held_stay_bounded_as_the_grid_grows_and_the_tables_come_out_whole(tmp_path, planted, monkeypatch):
    held = {}
    for n_prompts in (8, 32):
        lab, result, prompts, sink = _sweep(tmp_path, planted, monkeypatch, n_prompts)
        n_conds = 3   # baseline, 0, 10
        assert result.n_rows == sink.n_rows == n_prompts * n_conds
        held[n_prompts] = sink.most_held
        assert sink.most_held <= 4 + n_conds   # one batch plus one prompt's conditions

        run_dir = lab.store.root / result.run_id
        with open(run_dir / "tables/clamp_sweep.csv", encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh))
        gens = [json.loads(line) for line in (run_dir / "tables/generations.jsonl").read_text().splitlines()]
        assert [r["prompt"] for r in rows] == [p for p in prompts for _ in range(n_conds)]   # prompt order
        assert [r["sweep"] for r in rows[:n_conds]] == ["baseline", "0", "10"]
        assert [(g["prompt"], g["sweep"], g["output"]) for g in gens] == \
            [(r["prompt"], r["sweep"], r["output"]) for r in rows]
        assert all(r["is_collapsed"] == "True" for r in rows if r["sweep"] == "baseline")   # the planted loop
        assert result.n_collapsed_baselines == n_prompts
        by_value = {s.value: s for s in result.per_value}
        assert by_value[None].n == n_prompts and by_value[0.0].n_improved == n_prompts
        assert not [p.name for p in run_dir.rglob("*.tmp")]   # the spools are gone
        manifest = lab.store.manifest(result.run_id)
        listed = {a.path: a.bytes for a in manifest.artifacts}
        assert listed["tables/clamp_sweep.csv"] == (run_dir / "tables/clamp_sweep.csv").stat().st_size
    assert held[32] == held[8]   # four times the grid, the same rows in memory


def test_a_cancelled_sweep_leaves_no_spool(tmp_path, planted):
    lab = Lab(LabSettings(runs_dir=tmp_path / "runs"))
    steps = []

    class StopLater(Reporter):
        def step(self, done, total=None, message=""):
            steps.append(done)
            if len(steps) == 3:
                self.cancel()
            super().step(done, total, message)

    request = ClampSweepRequest(model=str(planted), neurons=["1:3"], prompts=WORDS, max_new_tokens=4,
                                values=[0, None], controls=0, batch_size=2)
    with pytest.raises(Exception, match="cancelled"):
        run_clamp_sweep(request, lab=lab, reporter=StopLater())
    (run_dir,) = list(lab.store.root.iterdir())
    assert lab.store.manifest(run_dir.name).status == "cancelled"
    assert not [p.name for p in run_dir.rglob("*.tmp")]
