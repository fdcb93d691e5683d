"""Long jobs through the real in-memory client: wait=false + run_status, and the tasks extension."""

from typing import Literal

import anyio
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.extension import ClientExtension, ResultClaim

from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.server import build_server
from neurotrace.tools._tasks import IDENTIFIER

pytestmark = pytest.mark.anyio
PACK = {"request": {"source": {"kind": "pack", "domains": ["geography"]}, "models": []}}


@pytest.fixture
def lab(tmp_path):
    return Lab(LabSettings(runs_dir=tmp_path / "runs"))


async def _poll(client: Client, run_id: str) -> dict:
    for _ in range(400):
        status = await client.call_tool("run_status", {"run_id": run_id})
        assert not status.is_error, status.content
        if status.structured_content["status"] != "running":
            return status.structured_content
        await anyio.sleep(0.05)
    raise AssertionError("the job never finished")


async def test_wait_false_returns_the_run_id_at_once_and_run_status_gives_the_result(lab):
    async with Client(build_server(lab=lab), raise_exceptions=True) as client:
        with anyio.fail_after(60):
            started = await client.call_tool("generate_facts", {**PACK, "wait": False})
            assert not started.is_error and started.structured_content["status"] == "running"
            run_id = started.structured_content["run_id"]
            done = await _poll(client, run_id)
        assert done["status"] == "complete" and done["result"]["run_id"] == run_id
        again = await client.call_tool("run_status", {"run_id": run_id})
        assert again.structured_content["result"] == done["result"]  # fetched again at any time
        kept = await client.read_resource(f"neurotrace://runs/{run_id}/artifacts/tool_result.json")
        assert run_id in kept.contents[0].text


async def test_wait_false_with_a_bad_request_fails_at_once_with_a_field_message(lab):
    async with Client(build_server(lab=lab), raise_exceptions=True) as client:
        bad = await client.call_tool("generate_facts", {"request": {"source": {"kind": "pack"}}, "wait": False})
        assert bad.is_error and "source" in bad.content[0].text and "Fix:" in bad.content[0].text
        assert not list((lab.store.root).iterdir())  # no run directory for a refused request
        wrong = await client.call_tool("generate_facts", {**PACK, "wait": "no"})
        assert wrong.is_error and "wait: must be true or false" in wrong.content[0].text


async def test_run_status_of_an_unknown_run_names_the_field(lab):
    async with Client(build_server(lab=lab), raise_exceptions=True) as client:
        missing = await client.call_tool("run_status", {"run_id": "20260101T000000Z-trace-0000abcd"})
        assert missing.is_error and "run_id" in missing.content[0].text
        assert str(lab.store.root) not in missing.content[0].text


class TaskCreated(types.Result):
    result_type: Literal["task"] = "task"
    task: types.Task


class TasksClient(ClientExtension):
    """A minimal tasks-extension client: polls tasks/get, then fetches tasks/result."""

    identifier = IDENTIFIER

    def __init__(self) -> None:
        self.seen: list[str] = []

    def claims(self):
        return [ResultClaim(result_type="task", model=TaskCreated, resolve=self.resolve)]

    async def resolve(self, created: TaskCreated, cctx) -> types.CallToolResult:
        task_id = created.task.task_id
        for _ in range(400):
            got = await cctx.session.send_request(
                types.GetTaskRequest(params=types.GetTaskRequestParams(task_id=task_id)), types.GetTaskResult)
            self.seen.append(got.status)
            if got.status in ("completed", "failed", "cancelled"):
                break
            await anyio.sleep(0.05)
        return await cctx.session.send_request(
            types.GetTaskPayloadRequest(params=types.GetTaskPayloadRequestParams(task_id=task_id)),
            types.CallToolResult)


async def test_a_client_declaring_the_tasks_extension_gets_a_task_it_can_poll_and_fetch(lab):
    ext = TasksClient()
    async with Client(build_server(lab=lab), extensions=[ext]) as client:
        with anyio.fail_after(60):
            result = await client.call_tool("generate_facts", PACK)
    assert not result.is_error and ext.seen[-1] == "completed"
    run_id = result.structured_content["run_id"]
    assert lab.store.manifest(run_id).status == "complete"


async def test_tasks_list_and_cancel_answer_for_a_task(lab):
    async with Client(build_server(lab=lab), extensions=[TasksClient()]) as client:
        with anyio.fail_after(60):
            await client.call_tool("generate_facts", PACK)
            listed = await client.session.send_request(types.ListTasksRequest(), types.ListTasksResult)
            assert len(listed.tasks) == 1 and listed.tasks[0].status == "completed"
            task_id = listed.tasks[0].task_id
            cancelled = await client.session.send_request(
                types.CancelTaskRequest(params=types.CancelTaskRequestParams(task_id=task_id)), types.CancelTaskResult)
            assert cancelled.status == "completed"  # a finished task stays finished
