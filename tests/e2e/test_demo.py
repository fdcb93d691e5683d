"""The main job: `neurotrace demo --quick` runs end to end offline and writes its summary."""

import json
import os
import shutil
import subprocess
import sys

from neurotrace.lab.runs import RunStore


def test_demo_runs_end_to_end_and_links_every_step(tmp_path):
    exe = shutil.which("neurotrace")
    cmd = [exe] if exe else [sys.executable, "-m", "neurotrace.cli"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([*cmd, "--runs-dir", str(tmp_path), "demo", "--quick"], env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    store = RunStore(tmp_path)
    demo = store.list_runs("demo")[0]
    assert demo.status == "complete"
    tools = {store.manifest(r).tool for r in demo.inputs}
    assert {"generate_facts", "trace", "compare", "clamp_sweep", "capture", "fit_sae", "features", "intervene"} <= tools
    assert all(store.manifest(r).status == "complete" for r in demo.inputs)
    summary = (tmp_path / demo.run_id / "summary.md").read_text(encoding="utf-8")
    assert "Causal tracing" in summary and "fact-gpt2-cyber" in summary
    steps = json.loads((tmp_path / demo.run_id / "steps.json").read_text(encoding="utf-8"))
    assert len(steps) >= 9
