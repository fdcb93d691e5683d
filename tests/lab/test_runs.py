"""Run store: atomic artifacts, manifest as commit marker, statuses, traversal refused, no pickle."""

import hashlib
import json

import numpy as np
import pytest
import torch

from neurotrace.lab.errors import Cancelled, InputError, NotFound
from neurotrace.lab.runs import RunStore
from neurotrace.testing.errors import raises_lab_error


def test_complete_run_lists_every_artifact_with_its_sha256(tmp_path):
    store = RunStore(tmp_path)
    with store.open_run("trace", {"a": 1}, seed=7) as run:
        run.write_json("result.json", {"x": 1})
        run.write_csv("tables/t.csv", [{"a": 1, "b": 2}])
        run.write_npy("arrays/a.npy", np.arange(4))
        run.write_tensors("arrays/t.safetensors", {"w": torch.ones(2, 3)})
        run_id = run.run_id
    manifest = store.manifest(run_id)
    assert manifest.status == "complete" and manifest.seed == 7 and manifest.finished
    assert "torch" in manifest.versions
    for entry in manifest.artifacts:
        data = (tmp_path / run_id / entry.path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry.sha256 and len(data) == entry.bytes
    assert json.loads((tmp_path / run_id / "request.json").read_text(encoding="utf-8")) == {"a": 1}
    assert store.read_npy(run_id, "arrays/a.npy").tolist() == [0, 1, 2, 3]
    assert store.read_tensors(run_id, "arrays/t.safetensors")["w"].shape == (2, 3)


def test_failed_run_is_marked_failed_with_its_error(tmp_path):
    store = RunStore(tmp_path)
    with pytest.raises(RuntimeError):
        with store.open_run("trace", {}) as run:
            run.write_text("partial.txt", "x")
            raise RuntimeError("boom")
    manifest = store.manifest(run.run_id)
    assert manifest.status == "failed" and "boom" in manifest.error
    assert [a.path for a in manifest.artifacts] == ["partial.txt"]


def test_cancelled_run_is_marked_cancelled(tmp_path):
    store = RunStore(tmp_path)
    with pytest.raises(Cancelled):
        with store.open_run("trace", {}) as run:
            raise Cancelled("stop")
    assert store.manifest(run.run_id).status == "cancelled"


def test_running_manifest_exists_before_any_artifact(tmp_path):
    store = RunStore(tmp_path)
    with store.open_run("trace", {}) as run:
        assert store.manifest(run.run_id).status == "running"
        assert store.list_runs()[0].run_id == run.run_id


def test_no_temp_files_remain_after_writes(tmp_path):
    store = RunStore(tmp_path)
    with store.open_run("x", {}) as run:
        run.write_text("a/b.txt", "hello")
    assert not list((tmp_path / run.run_id).rglob("*.tmp"))


def test_unlisted_and_traversal_paths_are_not_found(tmp_path):
    store = RunStore(tmp_path)
    (tmp_path / "secret.txt").write_text("s", encoding="utf-8")
    with store.open_run("x", {}) as run:
        run.write_text("a.txt", "hello")
    for rel in ("../secret.txt", "b.txt", "manifest.json/../../secret.txt"):
        with raises_lab_error(NotFound):
            store.artifact_path(run.run_id, rel)
    for run_id in ("../x", "nope", ""):
        with raises_lab_error(NotFound):
            store.manifest(run_id)


def test_artifact_path_escaping_the_run_is_refused_on_write(tmp_path):
    store = RunStore(tmp_path)
    with raises_lab_error(InputError) as err, store.open_run("x", {}) as run:
        run.write_text("../evil.txt", "x")
    assert err.value.field == "artifact"
    assert not (tmp_path / "evil.txt").exists()


def test_object_arrays_are_refused_rather_than_pickled(tmp_path):
    store = RunStore(tmp_path)
    with pytest.raises(ValueError), store.open_run("x", {}) as run:
        run.write_npy("o.npy", np.array([{"a": 1}], dtype=object))


def test_a_detached_run_says_its_result_is_pending_until_it_is_kept_or_settled(tmp_path):
    store = RunStore(tmp_path / "runs")
    for keep in (True, False):
        run_id = store.new_id("trace")
        with store.reserved_id(run_id), store.open_run("trace", {"x": 1}):
            pass
        assert store.manifest(run_id).status == "complete" and store.manifest(run_id).result_pending
        if keep:
            store.attach_result(run_id, {"structuredContent": {"run_id": run_id}})
        else:
            store.settle_result(run_id)            # packaging failed: nothing will come
        assert not store.manifest(run_id).result_pending
    with store.open_run("trace", {"x": 2}) as run:   # a CLI / Python run: nobody keeps a tool result
        pass
    assert not store.manifest(run.run_id).result_pending
