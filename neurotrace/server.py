"""``neurotrace-mcp``: build the server and run it over stdio or streamable HTTP.

The lifespan creates one :class:`~neurotrace.lab.lab.Lab` (model cache + run store) shared by every
request, and the task group detached jobs run in. :class:`NeurotraceServer` is the SDK's ``MCPServer``
with the agent-facing rules of this project:

* every argument-validation error reads ``tool: invalid arguments: field: problem. Fix: ...``;
* unknown top-level arguments are refused (``list_models`` takes none);
* experiment tools accept ``"wait": false`` (answer at once with the run id; see
  :mod:`neurotrace.tools._jobs`) and the tasks extension (:mod:`neurotrace.tools._tasks`);
* an unknown prompt, an unknown or missing prompt argument, or half of an example's arguments is a
  JSON-RPC invalid-params error (-32602) naming them; a prompt says which defaults it used;
* stdio answers unparseable lines (:mod:`neurotrace.transport`); HTTP keeps Host/Origin checks and
  needs ``--allow-remote`` plus a bearer token off loopback; SIGTERM/SIGINT cancel in-flight work.
"""

import argparse
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import unquote

import anyio
import mcp_types as types
from mcp.server import MCPServer
from mcp.server.apps import client_supports_apps
from mcp.server.lowlevel.helper_types import ReadResourceContents
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.exceptions import MCPError
from mcp_types.jsonrpc import INVALID_PARAMS
from pydantic import ValidationError

from neurotrace import EXPERIMENTS, __version__, prompts, resources, tools
from neurotrace.lab.errors import validation_message
from neurotrace.lab.facts.packs import list_packs
from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.lab.model.weights import catalog
from neurotrace.lab.model.weights.cache import parse_bytes
from neurotrace.lab.model.weights.embedded import EMBEDDED_MODELS
from neurotrace.lab.runs import URI_PREFIX, media_type
from neurotrace.prompts._arguments import argument_problem, defaults_note
from neurotrace.tools._dryrun import dry_run_result
from neurotrace.tools._faults import tool_faults
from neurotrace.tools._jobs import Job, Jobs, start_after_reply
from neurotrace.tools._report_ui import offer_report_ui, report_app
from neurotrace.tools._runner import AppContext, check_before_start
from neurotrace.tools._tasks import TasksExtension
from neurotrace.tools._wire import compact_tool, without_ui
from neurotrace.transport import (
    BearerAuth,
    CancelOnDisconnect,
    announce,
    is_loopback,
    read_token,
    security_settings,
    serve_stdio,
)

log = logging.getLogger("neurotrace.server")

def instructions() -> str:
    """The server's instructions: the real catalog models first, how to name any other model, and every
    declared tool (read from the list, so they cannot fall behind it)."""
    real = ", ".join(catalog.CATALOG)
    tools = ", ".join(e.name for e in EXPERIMENTS)
    return f"""neurotrace is a mechanistic-interpretability lab over PyTorch language models.
Every experiment tool writes one run directory and returns a summary, structured results, figures and
resource links (neurotrace://runs/{{run_id}}/...); full schemas: neurotrace://schemas/{{tool}}.
Models: start with the real catalog models {real} (offline; list_models says which are installed).
A model (any request's "model" field) may also be a .gguf file path, a local HuggingFace folder, a hub id
(downloaded only when the server is online), or base+adapter. Every experiment's request also takes
"seed", "device" ("cpu" default, "cuda", "auto") and, where it batches, "batch_size" (not repeated per tool). Toy models with known ground truth: fact-gpt2, fact-gpt2-cyber (causal),
fact-bert, fact-bert-cyber (masked).
Experiments: {tools}; also list_models, release_model, run_status (poll a run started with wait=false).
Locate stored facts with generate_facts then trace; rescue collapsed generations with clamp_sweep;
study features with capture -> fit_sae -> intervene; explain one prediction with logit_lens ->
attribute -> attention -> patch; check methods against ground truth with benchmark; plot redraws figures.
Use the prompts for step-by-step protocols. Any experiment tool takes "dry_run": true beside request for its
cost (forward rows, memory, seconds here) without running, and "wait": false to run detached."""

# Which tools may reach the hub (openWorldHint) and which take ``wait`` are the declared experiments' flags.
WAITABLE = frozenset(e.name for e in EXPERIMENTS if e.detachable)
WAIT_SCHEMA = {"type": "boolean", "description": "false: reply at once with run_id; poll run_status"}
ACCEPTED_SCHEMA = {"required": ["run_id", "status"]}  # the wait=false reply: {run_id, status: 'running'}
LIVE_JOBS: list[Jobs] = []  # every open lifespan's jobs, for the signal handler
LIVE_LABS: list[Lab] = []   # ... and their labs (runs still open when it gives up are marked cancelled)


def client_fallback(tool: Any) -> str | None:
    """The way round a refused sampling request, from the tool's request type (``CLIENT_FALLBACK``), if any."""
    field = getattr(tool.fn_metadata.arg_model, "model_fields", {}).get("request")
    return getattr(getattr(field, "annotation", None), "CLIENT_FALLBACK", None)


def agent_message(exc: ValidationError) -> str:
    """``field: problem. Fix: ...`` for every error (validation_message, with a fix where it gave none)."""
    parts = validation_message(exc).split("; ")
    return "; ".join(p if "Fix:" in p or p.startswith("(+") else
                     f"{p}. Fix: give {p.split(':', 1)[0]} a value of the type and range the tool's input schema "
                     "allows" for p in parts)


class NeurotraceServer(MCPServer):
    """MCPServer with agent-shaped argument errors, strict arguments, detached jobs and junk-safe stdio."""

    async def list_tools(self) -> list[types.Tool]:
        """The compact wire form of every tool (full schemas: ``neurotrace://schemas/{tool}``)."""
        return [compact_tool(tool) for tool in await super().list_tools()]

    async def _handle_list_tools(self, ctx: Any, params: Any) -> types.ListToolsResult:
        """The list a client receives: the report UI pointer only for clients that speak MCP Apps."""
        tools = await self.list_tools()
        return types.ListToolsResult(tools=tools if client_supports_apps(ctx) else [without_ui(t) for t in tools])

    def waitable(self) -> frozenset[str]:
        """The registered tools that may run detached: the experiments declared ``detachable``."""
        return frozenset(t.name for t in self._tool_manager.list_tools() if t.name in WAITABLE)

    def offer_wait(self) -> None:
        """Add the ``wait`` argument (and the accepted-reply shape) to every experiment tool's schemas."""
        for name in self.waitable():
            tool = self._tool_manager.get_tool(name)
            tool.parameters.setdefault("properties", {})["wait"] = WAIT_SCHEMA
            out = tool.fn_metadata.output_schema
            if out is not None:
                defs = out.pop("$defs", None)
                tool.fn_metadata.output_schema = {"type": "object", "anyOf": [out, ACCEPTED_SCHEMA],
                                                  **({"$defs": defs} if defs else {})}

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Any = None) -> Any:
        tool = self._tool_manager.get_tool(name)
        if tool is None:
            raise ToolError(f"Unknown tool: {str(name)[:80]}. Fix: call tools/list for the tool names")
        arguments = dict(arguments or {})
        dry = arguments.pop("dry_run", False) if name in self.waitable() else False
        if not isinstance(dry, bool):
            raise ToolError(f"{name}: dry_run: must be true or false. Fix: pass dry_run=true for the estimate only")
        args, wait = self._checked(name, tool, arguments)
        if dry:
            return self.dry_run(name, tool, args, context)
        if not wait:
            return self._accepted(self.start_job(name, args, context))
        try:
            return await super().call_tool(name, args, context)
        except ToolError as exc:
            if isinstance(exc.__cause__, ValidationError):
                raise ToolError(f"{name}: invalid arguments: {agent_message(exc.__cause__)}") from exc.__cause__
            raise
        except MCPError as exc:
            fallback = client_fallback(tool)
            if fallback is None:
                raise
            # a mid-call sampling request the client refused or failed (revisions before 2026-07-28)
            raise ToolError(f"{name}: the client refused or failed this tool's sampling request "
                            f"({str(exc.error.message)[:120]}). Fix: {fallback}") from exc

    def _checked(self, name: str, tool: Any, args: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        wait = args.pop("wait", True) if name in self.waitable() else True
        if not isinstance(wait, bool):
            raise ToolError(f"{name}: wait: must be true or false. Fix: pass wait=false to run in the background")
        allowed = sorted((tool.parameters.get("properties") or {}).keys() - {"wait"})
        unknown = sorted(str(k) for k in set(args) - set(allowed))
        if unknown:
            fix = f"pass only {allowed}" if allowed else "call it with no arguments"
            raise ToolError(f"{name}: {unknown[0][:80]}: unknown argument. Fix: {fix}")
        try:
            tool.fn_metadata.validate_arguments(args)
        except ValidationError as exc:
            raise ToolError(f"{name}: invalid arguments: {agent_message(exc)}") from exc
        return args, wait

    def dry_run(self, name: str, tool: Any, args: dict[str, Any], context: Context) -> types.CallToolResult:
        """The call's estimate (forward rows, peak memory, seconds here) after its forward-free checks."""
        request = tool.fn_metadata.validate_arguments(args).get("request")
        if request is None:
            raise ToolError(f"{name}: dry_run: this tool takes no request to estimate. Fix: call it without dry_run")
        with tool_faults():
            return dry_run_result(context.request_context.lifespan_context.lab, request)

    def start_job(self, name: str, args: dict[str, Any], context: Context) -> Job:
        """Run the (validated) tool call as a detached job whose id is its run id."""
        app: AppContext = context.request_context.lifespan_context
        check_before_start(app.lab, self._tool_manager.get_tool(name).fn_metadata.validate_arguments(args))
        run_id = app.lab.store.new_id(name)
        return app.jobs.start(run_id, name, lambda: MCPServer.call_tool(self, name, args, context))

    async def start_task(self, name: str, args: dict[str, Any], request_ctx: Any) -> Job | types.CallToolResult:
        try:
            args, _ = self._checked(name, self._tool_manager.get_tool(name), args)
            return self.start_job(name, args, Context(request_context=request_ctx, mcp_server=self))
        except ToolError as exc:
            return types.CallToolResult(content=[types.TextContent(type="text", text=str(exc))], is_error=True)

    @staticmethod
    def _accepted(job: Job) -> types.CallToolResult:
        text = (f"Started {job.tool} as run {job.run_id} in the background. Next: call run_status with "
                f"run_id='{job.run_id}' until its status is complete (progress is in its manifest resource).")
        return types.CallToolResult(content=[types.TextContent(type="text", text=text)],
                                    structured_content={"run_id": job.run_id, "status": "running"})

    async def get_prompt(self, name: str, arguments: dict[str, Any] | None = None, context: Any = None) -> Any:
        prompt = self._prompt_manager.get_prompt(name)
        if prompt is None:
            known = ", ".join(p.name for p in self._prompt_manager.list_prompts())
            raise MCPError(code=INVALID_PARAMS, message=f"name: unknown prompt {name[:80]!r}. Fix: use one of {known}")
        given = arguments or {}
        declared = prompt.arguments or []
        problem = argument_problem(name, given, [a.name for a in declared], [a.name for a in declared if a.required],
                                   prompts.BY_NAME.get(name))
        if problem:
            raise MCPError(code=INVALID_PARAMS, message=f"{name}: {problem}")
        try:
            result = await super().get_prompt(name, arguments, context)
        except ValueError as exc:
            raise MCPError(code=INVALID_PARAMS, message=f"{name}: {exc}") from exc
        note = defaults_note(prompt.fn, given)
        first = result.messages[0] if note and isinstance(result, types.GetPromptResult) and result.messages else None
        if first is not None and isinstance(first.content, types.TextContent):
            opened = first.model_copy(update={"content": first.content.model_copy(
                update={"text": note + first.content.text})})
            result = result.model_copy(update={"messages": [opened, *result.messages[1:]]})
        return result

    async def read_resource(self, uri: Any, context: Any = None) -> Any:
        """Artifacts are served with their own media type (PNG as image/png blob, JSON as application/json...)."""
        results = await super().read_resource(uri, context)
        text = str(uri)
        if "/artifacts/" not in text or not text.startswith(URI_PREFIX) or not isinstance(results, list):
            return results
        kind = media_type(unquote(text.rsplit("/", 1)[-1]))
        return [ReadResourceContents(content=r.content, mime_type=kind, meta=r.meta) for r in results]

    async def run_stdio_async(self) -> None:
        await serve_stdio(self._lowlevel_server)


def _completions(server: NeurotraceServer, lab: Lab) -> None:
    @server.completion()
    async def complete(ref: Any, argument: Any, context: Any) -> types.Completion | None:
        name, prefix = argument.name, (argument.value or "")
        if name in ("model", "models", "model_a", "model_b"):
            pool = [*EMBEDDED_MODELS, *(m["model"] for m in lab.cache.listing())]
        elif name in ("domain", "domains", "pack"):
            pool = list(list_packs())
        else:
            return None
        values = [v for v in dict.fromkeys(str(p) for p in pool) if v.startswith(prefix)][:100]
        return types.Completion(values=values, total=len(values), has_more=False)


LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "notice": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR, "critical": logging.CRITICAL, "alert": logging.CRITICAL,
          "emergency": logging.CRITICAL}


def _logging(server: NeurotraceServer) -> None:
    async def set_level(ctx: Any, params: types.SetLevelRequestParams) -> types.EmptyResult:
        logging.getLogger("neurotrace").setLevel(LEVELS.get(params.level, logging.WARNING))
        return types.EmptyResult()

    server._lowlevel_server.add_request_handler("logging/setLevel", types.SetLevelRequestParams, set_level)


def build_server(settings: LabSettings | None = None, lab: Lab | None = None) -> NeurotraceServer:
    """A ready server whose lifespan holds one Lab (pass ``lab`` to share one, e.g. in tests)."""

    lab = lab if lab is not None else Lab(settings)

    @asynccontextmanager
    async def lifespan(_server: MCPServer) -> AsyncIterator[AppContext]:
        jobs = Jobs()
        LIVE_JOBS.append(jobs)
        LIVE_LABS.append(lab)
        lab.store.reap_stale()
        try:
            async with anyio.create_task_group() as tg:
                jobs.bind(tg)
                yield AppContext(lab=lab, jobs=jobs)
                jobs.cancel_all()  # detached jobs end with the server; their runs end cancelled
                tg.cancel_scope.cancel()
        finally:
            LIVE_JOBS.remove(jobs)
            LIVE_LABS.remove(lab)

    async def start(name: str, args: dict[str, Any], ctx: Any) -> Any:
        return await server.start_task(name, args, ctx)

    tasks = TasksExtension(lambda ctx: ctx.lifespan_context.jobs, start, frozenset())
    server = NeurotraceServer(name="neurotrace", version=__version__, instructions=instructions(), lifespan=lifespan,
                              extensions=[tasks, report_app()])
    tools.register(server)
    offer_report_ui(server)   # MCP Apps clients get each run's report.html as the result's UI
    resources.register(server, lab)
    prompts.register(server)
    tasks.waitable = server.waitable()
    server._lowlevel_server.middleware.append(start_after_reply)  # no job runs behind a failed reply
    server.offer_wait()
    _completions(server, lab)
    _logging(server)
    return server


def _on_signal(signum: int, _frame: Any) -> None:
    """SIGTERM/SIGINT: cancel in-flight work, give workers ~2 s to mark their runs cancelled, mark the runs
    still open ``cancelled`` themselves, then exit. (This handler runs on the event loop's thread, so it
    waits on the runs the worker threads close, not on the loop.)"""
    asked = sum(jobs.cancel_all() for jobs in LIVE_JOBS)
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline and any(lab.store.open_count() for lab in LIVE_LABS):
        time.sleep(0.05)
    for lab in LIVE_LABS:
        lab.store.end_open_runs("cancelled", f"cancelled: the server stopped on signal {signum} before the run's "
                                "next step")
    print(f"neurotrace-mcp: stopped by signal {signum} ({asked} running call(s) cancelled)", file=sys.stderr,
          flush=True)
    os._exit(128 + signum)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neurotrace-mcp", description="neurotrace MCP server")
    parser.add_argument("--transport", choices=["stdio", "http"], default="stdio")
    parser.add_argument("--host", default="127.0.0.1", help="HTTP bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--allow-remote", action="store_true",
                        help="allow a non-loopback --host (then a bearer token is required)")
    parser.add_argument("--allowed-host", action="append", default=[],
                        help="extra Host header value to accept, e.g. lab.example.org:8765 (repeatable)")
    parser.add_argument("--allowed-origin", action="append", default=[],
                        help="extra Origin to accept, e.g. https://lab.example.org (repeatable)")
    parser.add_argument("--token-file", default=None, help="file whose first line is the bearer token "
                                                           "(else env NEUROTRACE_TOKEN)")
    parser.add_argument("--runs-dir", default=None, help="run directory root (env NEUROTRACE_RUNS_DIR)")
    parser.add_argument("--memory-budget", default=None, help="model cache budget, e.g. 8GiB "
                                                               "(env NEUROTRACE_MEMORY_BUDGET)")
    parser.add_argument("--max-jobs", type=int, default=None, help="jobs running at once, server-wide; the rest "
                        "queue (env NEUROTRACE_MAX_JOBS, default the number of cores)")
    return parser


def _serve_http(server: NeurotraceServer, args: argparse.Namespace) -> None:
    import uvicorn  # the HTTP transport's server; only needed for --transport http

    remote = not is_loopback(args.host)
    if remote and not args.allow_remote:
        raise SystemExit(f"neurotrace-mcp: --host {args.host} is not a loopback address; pass --allow-remote "
                         "(and a bearer token via NEUROTRACE_TOKEN or --token-file) to serve it")
    token = read_token(args.token_file)
    if remote and token is None:
        raise SystemExit("neurotrace-mcp: a non-loopback bind needs a bearer token: set NEUROTRACE_TOKEN or "
                         "pass --token-file")
    security = security_settings(args.host, args.port, args.allowed_host, args.allowed_origin)
    app = CancelOnDisconnect(server.streamable_http_app(transport_security=security, host=args.host))
    announce(args.host, args.port, token)
    uvicorn.run(BearerAuth(app, token) if token else app, host=args.host, port=args.port, log_level="warning")


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=os.environ.get("NEUROTRACE_LOG", "WARNING"), stream=sys.stderr)
    if args.max_jobs is not None and args.max_jobs < 1:
        _parser().error("--max-jobs must be at least 1")
    try:
        settings = LabSettings.from_env(runs_dir=args.runs_dir and os.path.abspath(args.runs_dir),
                                        memory_budget_bytes=parse_bytes(args.memory_budget), max_jobs=args.max_jobs)
    except ValueError as exc:
        raise SystemExit(f"neurotrace-mcp: {exc}") from None
    server = build_server(settings)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    if args.transport == "stdio":
        server.run("stdio")
    else:
        _serve_http(server, args)


if __name__ == "__main__":
    main()
