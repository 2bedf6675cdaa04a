"""A small SMTP sink for `elsewhere.test`: accepts any mail and keeps every message as a file.

It stands in for the rest of the internet in outbound-delivery, DKIM and bounce tests. start()
runs it detached (`python localcloud/sink.py --listen IP:PORT [--listen [IPV6]:PORT] --dir DIR`;
`python -m localcloud.sink` works too) and stop() ends it by PID. The server half is stdlib only; the
SMTP dialogue (`_serve`) is apart from what happens to a message (`store_message`), so an
aiosmtpd handler could replace the former and keep the latter.
Started as root, it binds its port and then runs as SINK_USER, who owns only the messages
directory (written through a descriptor opened before: its parents may be root's only).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pwd
import signal
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import NamedTuple, Optional, Union

MAX_MESSAGE = 20 * 1024 * 1024  # a runaway client must not fill the disk or memory
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
SINK_USER = "nobody"


class SinkError(Exception):
    """The sink could not start; carries its log."""


class SinkMessage(NamedTuple):
    mail_from: str  # "" for a bounce (null sender)
    rcpt_tos: list[str]
    raw: bytes
    peer: str = ""  # the client's address (IPv4 or IPv6), without the port


def store_message(directory: int, mail_from: str, rcpt_tos: list[str], data: bytes,
                  peer: str) -> str:
    """One .eml per message plus a .json envelope in the directory open as `directory`; the
    .json appears last, atomically."""
    name = f"{time.time_ns()}-{uuid.uuid4().hex[:8]}"
    _write(directory, f"{name}.eml", data)
    envelope = {"mail_from": mail_from, "rcpt_tos": rcpt_tos, "peer": peer, "received": time.time()}
    _write(directory, f".{name}.json.tmp", json.dumps(envelope).encode())
    os.rename(f".{name}.json.tmp", f"{name}.json", src_dir_fd=directory, dst_dir_fd=directory)
    return name


def _write(directory: int, name: str, data: bytes) -> None:
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=directory)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, directory: int) -> None:
    peer = "%s" % writer.get_extra_info("peername")[0]

    async def reply(line: str) -> None:
        writer.write(line.encode() + b"\r\n")
        await writer.drain()

    mail_from: Optional[str] = None
    rcpt_tos: list[str] = []
    await reply(f"220 {socket.gethostname()} ESMTP sink")
    try:
        while line := await reader.readline():
            verb, _, arg = line.decode("utf-8", "replace").strip().partition(" ")
            verb = verb.upper()
            if verb == "EHLO":
                await reply(f"250-sink greets {arg}\r\n250-8BITMIME\r\n"
                            f"250-SIZE {MAX_MESSAGE}\r\n250 SMTPUTF8")
            elif verb == "HELO":
                await reply("250 sink")
            elif verb == "MAIL" and arg.upper().startswith("FROM:"):
                mail_from, rcpt_tos = _address(arg[5:]), []
                await reply("250 2.1.0 Ok")
            elif verb == "RCPT" and arg.upper().startswith("TO:"):
                if mail_from is None:
                    await reply("503 5.5.1 MAIL first")
                    continue
                rcpt_tos.append(_address(arg[3:]))
                await reply("250 2.1.5 Ok")
            elif verb == "DATA":
                if not rcpt_tos:
                    await reply("503 5.5.1 RCPT first")
                    continue
                await reply("354 End data with <CR><LF>.<CR><LF>")
                data = await _read_data(reader)
                if data is None:
                    await reply("552 5.3.4 Message too big")
                else:
                    queued = store_message(directory, mail_from or "", rcpt_tos, data, peer)
                    await reply(f"250 2.0.0 Ok: queued as {queued}")
                mail_from, rcpt_tos = None, []
            elif verb == "RSET":
                mail_from, rcpt_tos = None, []
                await reply("250 2.0.0 Ok")
            elif verb == "NOOP":
                await reply("250 2.0.0 Ok")
            elif verb == "QUIT":
                await reply("221 2.0.0 Bye")
                break
            else:
                await reply("502 5.5.2 Command not implemented")
    except (ConnectionError, ValueError):  # ValueError: a line over the stream's 64 KiB limit
        pass  # a client that hangs up or misbehaves mid-dialogue only loses its own session
    finally:
        writer.close()


async def _read_data(reader: asyncio.StreamReader) -> Optional[bytes]:
    """The message up to the lone dot, dot-unstuffed (RFC 5321 4.5.2); None when too big."""
    lines, size = [], 0
    while (line := await reader.readline()) not in (b".\r\n", b".\n", b""):
        size += len(line)
        if size <= MAX_MESSAGE:
            lines.append(line[1:] if line.startswith(b".") else line)
    return b"".join(lines) if size <= MAX_MESSAGE else None


def _address(arg: str) -> str:
    """`<a@b> SIZE=12` -> `a@b`; `<>` -> `` (the null sender of a bounce)."""
    arg = arg.strip()
    if arg.startswith("<"):
        return arg[1 : arg.find(">")] if ">" in arg else arg[1:]
    return arg.split(" ", 1)[0]


async def _main(listen: list[tuple[str, int]], directory: Path, user: Optional[str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    servers = [await asyncio.start_server(lambda r, w: _serve(r, w, dir_fd), ip, port)
               for ip, port in listen]
    if user:
        _drop_root(user, dir_fd)
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stopping.set)
    await stopping.wait()
    for server in servers:
        server.close()


def _drop_root(user: str, dir_fd: int) -> None:
    """Once the ports are bound: run as `user`, who may write the messages directory only."""
    entry = pwd.getpwnam(user)
    os.fchown(dir_fd, entry.pw_uid, entry.pw_gid)
    os.fchmod(dir_fd, 0o700)
    os.setgroups([])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)


class SinkStatus(NamedTuple):
    running: bool
    pid: Optional[int]


def start(state_dir: Union[str, Path], ip: str, port: int, ipv6: Optional[str] = None) -> int:
    """Start the sink detached on ip (and ipv6), wait until it greets on each: its PID (also in
    state_dir/sink.pid)."""
    state = Path(state_dir).resolve()
    state.mkdir(parents=True, exist_ok=True)
    from localcloud import process  # here, so the server half runs as a plain file

    listen = [ip, *([ipv6] if ipv6 else [])]
    # Run as a file, not `-m`: the caller's cwd need not be the project root.
    argv = [sys.executable, str(Path(__file__).resolve()), "--dir", str(state / "messages")]
    if os.geteuid() == 0:
        argv += ["--user", SINK_USER]
    for address in listen:
        argv += ["--listen", f"[{address}]:{port}" if ":" in address else f"{address}:{port}"]
    pid = process.spawn(argv, state / "sink.log", state / "sink.pid")
    deadline = time.monotonic() + START_TIMEOUT
    waiting = list(listen)
    while time.monotonic() < deadline:
        if not process.is_alive(pid):
            raise SinkError(f"sink exited: {(state / 'sink.log').read_text()[-2000:]}")
        try:
            with socket.create_connection((waiting[0], port), timeout=0.5) as conn:
                if conn.recv(64).startswith(b"220"):
                    waiting.pop(0)
                    if not waiting:
                        return pid
        except OSError:
            time.sleep(0.05)
    stop(pid)
    raise SinkError(f"sink did not greet on {waiting[0]} port {port} within {START_TIMEOUT}s")


def stop(target: Union[int, str, Path], timeout: float = STOP_TIMEOUT) -> bool:
    """Stop the sink by PID or by its state dir (SIGKILL at the deadline); False if none ran."""
    from localcloud import process

    pid = target if isinstance(target, int) else status(target).pid
    if pid is None or not process.is_alive(pid):
        return False
    process.terminate(pid, timeout)
    return True


def status(state_dir: Union[str, Path]) -> SinkStatus:
    from localcloud import process

    # Only the very process we started counts (start time checked), not a reused PID.
    pid = process.recorded(Path(state_dir) / "sink.pid", [str(Path(__file__).resolve())])
    return SinkStatus(pid is not None, pid)


def messages(state_dir: Union[str, Path]) -> list[SinkMessage]:
    """Every message received so far, oldest first."""
    found = []
    for envelope_file in sorted((Path(state_dir) / "messages").glob("*.json")):
        envelope = json.loads(envelope_file.read_text())
        raw = envelope_file.with_suffix(".eml").read_bytes()
        found.append(SinkMessage(envelope["mail_from"], envelope["rcpt_tos"], raw, envelope.get("peer", "")))
    return found


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, action="append", help="IP:PORT or [IPV6]:PORT")
    parser.add_argument("--dir", required=True, type=Path, help="where messages are written")
    parser.add_argument("--user", help="run as this user once the ports are bound")
    args = parser.parse_args()
    addresses = [(host.strip("[]"), int(port)) for host, _, port in (a.rpartition(":") for a in args.listen)]
    asyncio.run(_main(addresses, args.dir, args.user))
