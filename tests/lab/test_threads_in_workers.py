"""The thread count the Lab sets holds in the worker threads the MCP tools run in (anyio.to_thread)."""

import anyio
import anyio.to_thread
import torch

from neurotrace.lab.lab import Lab, LabSettings


def test_a_tool_worker_thread_uses_the_lab_thread_count(tmp_path):
    before = torch.get_num_threads()
    try:
        lab = Lab(LabSettings(runs_dir=tmp_path, threads=1))

        async def in_worker() -> int:
            return await anyio.to_thread.run_sync(torch.get_num_threads)

        assert anyio.run(in_worker) == lab.threads == 1
    finally:
        torch.set_num_threads(before)
