"""Long jobs through the real in-memory client: wait=false + run_status, and the tasks extension."""

from typing import Literal

import anyio
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.extension import ClientExtension, ResultClaim
from pydantic import ConfigDict, Field

from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.server import build_server
from neurotrace.tools._jobs import Jobs, start_after_reply
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
    """The 2026-07-28 extension's flat CreateTaskResult (Result & Task)."""

    model_config = ConfigDict(extra="allow")
    result_type: Literal["task"] = "task"
    task_id: str
    status: str


class TasksClient(ClientExtension):
    """A minimal tasks-extension client: polls tasks/get (status), then reads tasks/result."""

    identifier = IDENTIFIER

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.created: list[dict] = []
        self.got: list[dict] = []

    def claims(self):
        return [ResultClaim(result_type="task", model=TaskCreated, resolve=self.resolve)]

    async def resolve(self, created: TaskCreated, cctx) -> types.CallToolResult:
        self.created.append(created.model_dump(by_alias=True))
        for _ in range(400):
            got = await cctx.session.send_request(GetTask(params=TaskId(taskId=created.task_id)), Detailed)
            self.seen.append(got.status)
            self.got.append(got.model_dump(by_alias=True))
            if got.status in ("completed", "failed", "cancelled"):
                break
            await anyio.sleep(0.05)
        return await cctx.session.send_request(
            types.GetTaskPayloadRequest(params=types.GetTaskPayloadRequestParams(task_id=created.task_id)),
            types.CallToolResult)


class TaskId(types.RequestParams):
    task_id: str = Field(alias="taskId")


class GetTask(types.Request[TaskId, Literal["tasks/get"]]):
    method: Literal["tasks/get"] = "tasks/get"
    params: TaskId


class Detailed(types.Result):
    model_config = ConfigDict(extra="allow")
    task_id: str = Field(alias="taskId")
    status: str
    result: dict | None = None


async def test_a_client_declaring_the_tasks_extension_gets_a_task_it_can_poll_and_fetch(lab):
    ext = TasksClient()
    async with Client(build_server(lab=lab), extensions=[ext], mode="2026-07-28") as client:
        with anyio.fail_after(60):
            result = await client.call_tool("generate_facts", PACK)
    assert not result.is_error and ext.seen[-1] == "completed"
    run_id = result.structured_content["run_id"]
    assert ext.created[0]["taskId"] == run_id and ext.created[0]["pollIntervalMs"] > 0
    assert ext.got[-1]["result"]["structuredContent"]["run_id"] == run_id  # tasks/get inlines the result
    assert lab.store.manifest(run_id).status == "complete"


async def test_tasks_list_and_cancel_answer_for_a_task(lab):
    async with Client(build_server(lab=lab), extensions=[TasksClient()], mode="2026-07-28") as client:
        with anyio.fail_after(60):
            await client.call_tool("generate_facts", PACK)
            listed = await client.session.send_request(types.ListTasksRequest(), Listed)
            assert len(listed.tasks) == 1 and listed.tasks[0]["status"] == "completed"
            task_id = listed.tasks[0]["taskId"]
            await client.session.send_request(
                types.CancelTaskRequest(params=types.CancelTaskRequestParams(task_id=task_id)), types.EmptyResult)
            again = await client.session.send_request(GetTask(params=TaskId(taskId=task_id)), Detailed)
            assert again.status == "completed"  # a finished task stays finished


class Listed(types.Result):
    tasks: list[dict]


async def test_a_job_whose_reply_fails_never_runs(lab):
    """start_after_reply: a job started while its tools/call reply is shaped runs only if that reply was."""
    jobs, ran = Jobs(), []

    async def work() -> types.CallToolResult:
        ran.append(1)
        return types.CallToolResult(content=[])

    class Ctx:
        method = "tools/call"

    async def failing_reply(ctx) -> dict:
        jobs.start("20260101T000000Z-trace-00000000", "trace", work)
        raise RuntimeError("the reply could not be shaped")

    async def good_reply(ctx) -> dict:
        jobs.start("20260101T000000Z-trace-00000001", "trace", work)
        return {"content": []}

    async with anyio.create_task_group() as tg:
        jobs.bind(tg)
        with pytest.raises(RuntimeError):
            await start_after_reply(Ctx(), failing_reply)
        await anyio.sleep(0.1)
        assert not ran and jobs.get("20260101T000000Z-trace-00000000") is None
        await start_after_reply(Ctx(), good_reply)
        with anyio.fail_after(10):
            await jobs.get("20260101T000000Z-trace-00000001").finished.wait()
    assert ran == [1]


async def test_run_status_with_cancel_stops_a_waited_call(lab):
    """Issue 23 item 14: run_status cancel=true used to stop only detached jobs, not a waited call."""
    long = {"request": {"parts": ["circuits"], "seeds": 2, "samples": 20000, "ig_steps": 2048}}
    replies: list[types.CallToolResult] = []
    async with Client(build_server(lab=lab)) as client:
        with anyio.fail_after(240):
            async with anyio.create_task_group() as tg:
                async def waited() -> None:
                    replies.append(await client.call_tool("benchmark", long))

                tg.start_soon(waited)
                run_id = None
                while run_id is None:
                    await anyio.sleep(0.2)
                    runs = list(lab.store.root.glob("*-benchmark-*")) if lab.store.root.exists() else []
                    run_id = runs[0].name if runs else None
                await anyio.sleep(2.0)
                asked = await client.call_tool("run_status", {"run_id": run_id, "cancel": True})
                assert not asked.is_error, asked.content
                with anyio.fail_after(10):
                    while not replies:
                        await anyio.sleep(0.1)
    assert replies[0].is_error and "cancelled" in replies[0].content[0].text
    assert lab.store.manifest(run_id).status == "cancelled"
