"""The local MongoDB wire server, with a password.

``nx-27017`` (a MongoDB wire-protocol server over SQLite) has no authentication. This
module runs its request handler behind a gate: until a connection has authenticated
with SCRAM-SHA-256 (:mod:`broker.scram`), only the handshake (``hello``), ``ping`` and
the SASL conversation are answered; everything else gets MongoDB's ``Unauthorized``.
After authentication the connection is handed to nx-27017's own loop unchanged.

    python -m broker.mongo_server --data-dir DIR --port PORT --credentials FILE

``FILE`` is a JSON file (mode 0600) holding ``mongo_user`` and ``mongo_password``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import struct
import uuid
from pathlib import Path
from typing import Any

from bson import Binary
from nx_27017.handler import NeoSQLiteHandler
from nx_27017.server import handle_client
from nx_27017.wire_protocol import (
    OP_MSG,
    OP_QUERY,
    ResponseBuilder,
    WireProtocol,
    _get_next_request_id,
)

from broker.scram import Conversation, Credentials, ScramError

log = logging.getLogger("broker.mongo_server")

MECHANISM = "SCRAM-SHA-256"
OPEN_COMMANDS = {"hello", "ismaster", "ping", "buildinfo", "endsessions"}
"""Answered before authentication (drivers' monitoring connections never authenticate)."""
MAX_MESSAGE = 48 * 1024 * 1024


class Gate:
    """One connection's state before it is authenticated."""

    def __init__(self, handler: NeoSQLiteHandler, credentials: Credentials) -> None:
        self.handler = handler
        self.credentials = credentials
        self.conversation: Conversation | None = None
        self.conn_id = str(uuid.uuid4())

    async def answer(self, command: dict[str, Any], request_id: int) -> dict[str, Any]:
        name = next(iter(command), "").lower()
        if name in OPEN_COMMANDS:
            return await self._forward(command, request_id)
        if name == "saslstart":
            return self._sasl_start(command)
        if name == "saslcontinue":
            return self._sasl_continue(command)
        return {"ok": 0, "code": 13, "codeName": "Unauthorized",
                "errmsg": f"command {next(iter(command), '?')} requires authentication"}

    @property
    def authenticated(self) -> bool:
        return self.conversation is not None and self.conversation.authenticated

    async def _forward(self, command: dict[str, Any], request_id: int) -> dict[str, Any]:
        message = {"request_id": request_id, "sections": [("body", command)],
                   "_conn_id": self.conn_id}
        _, reply = await asyncio.to_thread(self.handler.handle_command, message)
        reply.pop("speculativeAuthenticate", None)
        if "saslSupportedMechs" in command:
            reply["saslSupportedMechs"] = [MECHANISM]
        return reply

    def _sasl_start(self, command: dict[str, Any]) -> dict[str, Any]:
        if command.get("mechanism") != MECHANISM:
            return _auth_failed(f"mechanism {command.get('mechanism')!r} is not supported; "
                                f"use {MECHANISM}")
        self.conversation = Conversation(self.credentials)
        try:
            payload = self.conversation.start(bytes(command.get("payload", b"")))
        except ScramError:
            return _auth_failed("Authentication failed.")
        return {"ok": 1, "conversationId": 1, "done": False, "payload": Binary(payload)}

    def _sasl_continue(self, command: dict[str, Any]) -> dict[str, Any]:
        if self.conversation is None:
            return _auth_failed("no SASL conversation in progress")
        if self.conversation.authenticated:  # the empty final exchange
            return {"ok": 1, "conversationId": 1, "done": True, "payload": Binary(b"")}
        try:
            payload = self.conversation.finish(bytes(command.get("payload", b"")))
        except ScramError:
            return _auth_failed("Authentication failed.")
        return {"ok": 1, "conversationId": 1, "done": True, "payload": Binary(payload)}


def _auth_failed(message: str) -> dict[str, Any]:
    return {"ok": 0, "code": 18, "codeName": "AuthenticationFailed", "errmsg": message}


async def _read_message(reader: asyncio.StreamReader) -> tuple[bytes, int, int]:
    header = await reader.readexactly(16)
    length, request_id, _, opcode = struct.unpack("<iiii", header)
    if not 16 <= length <= MAX_MESSAGE:
        raise ConnectionError(f"invalid message length {length}")
    return header + await reader.readexactly(length - 16), request_id, opcode


async def serve_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                           handler: NeoSQLiteHandler, credentials: Credentials) -> None:
    gate = Gate(handler, credentials)
    try:
        while not gate.authenticated:
            message, request_id, opcode = await _read_message(reader)
            if opcode == WireProtocol.OP_MSG:
                parsed = OP_MSG.parse(message)
                body = next(d for kind, d in parsed["sections"] if kind == "body")
                reply = await gate.answer(body, request_id)
                writer.write(ResponseBuilder.build_op_msg_reply(
                    _get_next_request_id(), request_id, reply))
            elif opcode == WireProtocol.OP_QUERY:  # legacy handshake
                query = OP_QUERY.parse(message)["query"]
                reply = await gate.answer(query.get("$query", query), request_id)
                writer.write(ResponseBuilder.build_reply(_get_next_request_id(), request_id,
                                                         [reply]))
            else:
                raise ConnectionError(f"unsupported opcode {opcode} before authentication")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, StopIteration, ValueError):
        writer.close()
        return
    await handle_client(reader, writer, handler)


def load_credentials(path: Path) -> Credentials:
    values = json.loads(path.read_text())
    return Credentials.derive(values["mongo_user"], values["mongo_password"])


async def _main(args: argparse.Namespace) -> None:
    handler = NeoSQLiteHandler(str(Path(args.data_dir) / "default.db"), journal_mode="WAL",
                               data_dir=args.data_dir)
    credentials = load_credentials(Path(args.credentials))
    server = await asyncio.start_server(
        lambda r, w: serve_connection(r, w, handler, credentials), args.host, args.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("serving on %s:%s", args.host, args.port)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m broker.mongo_server")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--credentials", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
