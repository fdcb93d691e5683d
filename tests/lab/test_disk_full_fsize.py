"""Issue 23 item 7 where no tmpfs can be mounted (tests/e2e/test_disk_full.py needs user namespaces): the
same failure through the file-size limit. A child process lowers RLIMIT_FSIZE below the size of one run file
(writes then fail with EFBIG, SIGXFSZ ignored) and runs generate_facts through the Python API on real files:
the run ends ``failed`` with "disk full" naming the runs directory, and no temp file is left."""

import json
import subprocess
import sys
import textwrap

CHILD = textwrap.dedent("""
    import json, resource, signal, sys
    from neurotrace import GenerateFactsRequest, run_generate_facts
    from neurotrace.lab.errors import DiskFull
    from neurotrace.lab.lab import Lab, LabSettings
    lab = Lab(LabSettings(runs_dir=sys.argv[1]))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (32 * 1024, resource.RLIM_INFINITY))
    packs = ["cybersecurity", "finance", "geography", "known-facts", "law", "medicine", "programming"]
    try:
        run_generate_facts(GenerateFactsRequest(source={"kind": "pack", "domains": packs}, models=[]), lab=lab)
    except DiskFull as exc:
        print(json.dumps({"field": exc.field, "error": str(exc)}))
""")


def test_a_run_over_the_file_size_limit_ends_failed_as_disk_full_without_temp_files(tmp_path):
    runs = tmp_path / "runs"
    proc = subprocess.run([sys.executable, "-c", CHILD, str(runs)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    said = json.loads(proc.stdout.strip().splitlines()[-1])
    assert said["field"] == "runs_dir" and "disk full" in said["error"] and str(runs) in said["error"]
    (run,) = [p for p in runs.iterdir() if p.is_dir()]
    manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["status"] == "failed" and "disk full" in manifest["error"]
    assert not [p.name for p in run.rglob("*.tmp")]
