"""How ``neurotrace-mcp`` meets the wire: a stdio reader that answers junk, and a guarded HTTP app.

**stdio.** The SDK's reader drops a line it cannot parse (the client then waits forever for a reply).
:func:`serve_stdio` feeds the SDK's ``stdio_server`` a pre-validating line source instead: a line that
is not JSON gets the JSON-RPC parse error (-32700, ``id: null``), a JSON value that is not a valid
message (a lone surrogate, nesting too deep, a wrong shape) gets invalid request (-32600) with the
request's ``id`` when one can be read, so the client is answered either way.

**HTTP.** Loopback binds keep the SDK's Host/Origin checks (DNS-rebinding protection). A non-loopback
bind needs ``--allow-remote``, keeps Host/Origin validation against the configured hosts/origins and
requires a bearer token (``NEUROTRACE_TOKEN`` or ``--token-file``), compared in constant time.
"""

import hmac
import io
import ipaddress
import json
import logging
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import anyio
import mcp_types as types
from mcp.server.stdio import stdio_server
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.message import SessionMessage
from mcp_types.jsonrpc import INVALID_REQUEST, PARSE_ERROR, ErrorData, JSONRPCError

log = logging.getLogger("neurotrace.server")
MAX_LINE_CHARS = 32 * 1024 * 1024


def _request_id(value: object) -> str | int | None:
    if isinstance(value, dict):
        rid = value.get("id")
        if isinstance(rid, str) and len(rid) <= 256 and rid.isprintable() or type(rid) is int:
            return rid
    return None


def junk_reply(line: str) -> JSONRPCError | None:
    """The error reply for a line the SDK cannot parse, or None when the line is a valid message."""
    if not line.strip():
        return None
    if len(line) > MAX_LINE_CHARS:
        return JSONRPCError(jsonrpc="2.0", id=None, error=ErrorData(code=INVALID_REQUEST,
                            message=f"Invalid request: message longer than {MAX_LINE_CHARS} characters"))
    try:
        types.jsonrpc_message_adapter.validate_json(line, by_name=False)
        return None if '"id"' not in line else _bad_id(line)
    except Exception:  # pydantic ValidationError, RecursionError: answered below
        pass
    try:
        value = json.loads(line)
    except (ValueError, RecursionError):
        return JSONRPCError(jsonrpc="2.0", id=None, error=ErrorData(code=PARSE_ERROR, message="Parse error: the "
                            "line is not JSON. Fix: send one JSON-RPC 2.0 message per line (UTF-8)"))
    return JSONRPCError(jsonrpc="2.0", id=_request_id(value), error=ErrorData(
        code=INVALID_REQUEST, message="Invalid request: not a valid JSON-RPC 2.0 message (bad shape, lone "
        "surrogate or nesting too deep). Fix: send a well-formed request"))


def _bad_id(line: str) -> JSONRPCError | None:
    """-32600 for a message whose ``id`` is not a string or an integer (JSON-RPC 2.0 allows only those, and
    null only in replies): the SDK would read it as a notification and never answer."""
    try:
        value = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, dict) or "id" not in value or "method" not in value:
        return None  # a response (a client's error reply may carry id null) is not answered
    rid = value["id"]
    if isinstance(rid, str) or (type(rid) is int):
        return None
    return JSONRPCError(jsonrpc="2.0", id=None, error=ErrorData(code=INVALID_REQUEST, message=f"Invalid request: "
                        f"id must be a string or an integer, not {type(rid).__name__ if rid is not None else 'null'}"
                        ". Fix: give every request a string or integer id"))


@dataclass
class CheckedLines:
    """An async line source for ``stdio_server`` that answers unparseable lines itself."""

    file: anyio.AsyncFile
    write: object = None  # the transport's write stream, set once the transport is open
    pending: list[JSONRPCError] = field(default_factory=list)

    async def __aiter__(self) -> AsyncIterator[str]:
        async for line in self.file:
            reply = junk_reply(line)
            if reply is None:
                yield line
            elif self.write is not None:
                await self.write.send(SessionMessage(reply))  # type: ignore[attr-defined]


def _private_stdin() -> anyio.AsyncFile:
    """The wire's stdin on a private descriptor; fd 0 then reads EOF, so children never eat the wire."""
    private = os.dup(0)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    raw = os.fdopen(private, "rb", closefd=False)
    return anyio.wrap_file(io.TextIOWrapper(raw, encoding="utf-8", errors="replace"))


async def serve_stdio(lowlevel_server) -> None:
    """Run ``lowlevel_server`` over stdio with junk lines answered (see the module docstring)."""
    lines = CheckedLines(_private_stdin())
    async with stdio_server(stdin=lines) as (read_stream, write_stream):  # type: ignore[arg-type]
        lines.write = write_stream
        await lowlevel_server.run(read_stream, write_stream, lowlevel_server.create_initialization_options())


# -- HTTP ----------------------------------------------------------------------------------------------
LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def security_settings(host: str, port: int, allowed_hosts: list[str], allowed_origins: list[str]
                      ) -> TransportSecuritySettings:
    """Host/Origin validation that stays on for every bind (loopback names always allowed)."""
    hosts = ["127.0.0.1:*", "localhost:*", "[::1]:*", *allowed_hosts]
    if host not in ("0.0.0.0", "::"):  # the bound address itself (127.0.0.2 is loopback too)
        shown = f"[{host.strip('[]')}]" if ":" in host else host
        hosts.append(f"{shown}:{port}")
    origins = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*", *allowed_origins]
    return TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts,
                                     allowed_origins=origins)


def read_token(token_file: str | None) -> str | None:
    """The bearer token: ``--token-file`` (first line) or ``NEUROTRACE_TOKEN``; None when neither is set."""
    if token_file:
        try:
            with open(token_file, encoding="utf-8") as fh:
                token = fh.readline().strip()
        except (OSError, UnicodeDecodeError) as exc:
            name = os.path.basename(token_file.rstrip("/")) or token_file
            raise SystemExit(f"neurotrace-mcp: --token-file: cannot read {name!r} ({type(exc).__name__}). Fix: "
                             "give a readable UTF-8 file whose first line is the token, or set NEUROTRACE_TOKEN"
                             ) from None
    else:
        token = os.environ.get("NEUROTRACE_TOKEN", "").strip()
    if token and len(token) < 16:
        raise SystemExit("neurotrace-mcp: the bearer token must be at least 16 characters")
    return token or None


class BearerAuth:
    """ASGI middleware: every HTTP request needs ``Authorization: Bearer <token>`` (constant-time compare)."""

    def __init__(self, app, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            given = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                body = b'{"error": "unauthorized: send Authorization: Bearer <token>"}'
                await send({"type": "http.response.start", "status": 401, "headers": [
                    (b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


MAX_WATCHED_BODY = 1 << 20  # a POST body this long is not kept for its id (no call that long is cancelled)


class CancelOnDisconnect:
    """ASGI middleware: a client that drops a POST before its reply came cancels that request.

    On a session-era wire (2025 protocols, ``Mcp-Session-Id``) the SDK keeps running a request whose HTTP
    client went away; this sends the session the ``notifications/cancelled`` the client would have sent
    (so a waited experiment stops at its next step and its run ends ``cancelled``). The 2026 wire, with no
    session, already cancels a request when its stream closes. The body is watched as it is read (the
    request's id), the reply as it is written (finished: nothing to cancel)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        body, state = bytearray(), {"answered": False, "fired": False}

        async def watched_receive():
            message = await receive()
            if message["type"] == "http.request" and len(body) <= MAX_WATCHED_BODY:
                body.extend(message.get("body", b""))
            elif message["type"] == "http.disconnect" and not state["answered"] and not state["fired"]:
                state["fired"] = True
                await self._cancel(scope, bytes(body))
            return message

        async def watched_send(message) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                state["answered"] = True
            await send(message)

        await self.app(scope, watched_receive, watched_send)

    async def _cancel(self, scope, body: bytes) -> None:
        try:
            message = json.loads(body)
        except (ValueError, RecursionError):
            return
        headers = [(k, v) for k, v in scope.get("headers") or [] if k.lower() != b"content-length"]
        if not isinstance(message, dict) or "method" not in message or "id" not in message \
                or not any(k.lower() == b"mcp-session-id" for k, _ in headers):
            return
        note = json.dumps({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {
            "requestId": message["id"], "reason": "the HTTP client disconnected before the reply"}}).encode()
        sub = {**scope, "headers": [*headers, (b"content-length", str(len(note)).encode())]}
        given = [False]

        async def sub_receive():
            if not given[0]:
                given[0] = True
                return {"type": "http.request", "body": note, "more_body": False}
            return {"type": "http.disconnect"}

        async def sub_send(_message) -> None:
            return None

        log.info("HTTP client left before the reply to request %r: cancelling it", message["id"])
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            try:
                await self.app(sub, sub_receive, sub_send)
            except Exception:  # best effort: the request then runs to its end as before
                log.warning("could not cancel the request of a disconnected client", exc_info=True)


def announce(host: str, port: int, token: str | None) -> None:
    """Print the URL (and, for remote binds, a warning) to stderr at start-up."""
    shown = f"[{host}]" if ":" in host else host
    print(f"neurotrace-mcp: serving MCP on http://{shown}:{port}/mcp", file=sys.stderr, flush=True)
    if not is_loopback(host):
        print("neurotrace-mcp: WARNING: bound to a non-loopback address; anyone who can reach it and holds the "
              "bearer token can run experiments and read runs. Clients must reach it by a name the server "
              "accepts: pass --allowed-host NAME:PORT (and --allowed-origin for browsers) for every host name "
              "they use, else their requests are refused (Host check)", file=sys.stderr, flush=True)
    elif token:
        print("neurotrace-mcp: bearer token required", file=sys.stderr, flush=True)
