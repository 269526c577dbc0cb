"""A client of OpenSSH's multiplexing protocol (PROTOCOL.mux, version 4): sessions on a
master connection (`ssh -M`), without starting an `ssh` process for each.

The master is the OpenSSH client itself — it authenticated, checked the host key and
applies the user's configuration; this module only asks it, over its control socket,
for a new session running a command, and hands it the session's stdin, stdout and
stderr as file descriptors (SCM_RIGHTS), exactly as `ssh -S SOCKET host command` does.
The master then copies the channel to and from those descriptors by itself, and ends
with the command's exit status (MUX_S_EXIT_MESSAGE) and by closing the control
connection. Closing the control connection first ends the session (as killing a
`ssh -S` client does). A master that goes away (its connection dropped) closes the
control connection without an exit status.

Packets are `uint32 length, uint32 type, body`; strings are `uint32 length, bytes`;
booleans are uint32.
"""

from __future__ import annotations

import socket
import struct

import trio

MUX_VERSION = 4
MUX_MSG_HELLO = 0x00000001
MUX_C_NEW_SESSION = 0x10000002
MUX_C_TERMINATE = 0x10000005
MUX_S_OK = 0x80000001
MUX_S_PERMISSION_DENIED = 0x80000002
MUX_S_FAILURE = 0x80000003
MUX_S_EXIT_MESSAGE = 0x80000004
MUX_S_SESSION_OPENED = 0x80000006
MUX_S_TTY_ALLOC_FAIL = 0x80000008
NO_ESCAPE = 0xFFFFFFFF
OPEN_TIMEOUT = 30.0  # seconds a master may take to open a session on its connection


class MuxError(Exception):
    """The master refused, or its control socket is gone or speaks another protocol."""


class MuxGone(MuxError):
    """Nothing answers on the control socket: the master has ended."""


class MuxRefused(MuxError):
    """The master (or the server behind it: sshd's MaxSessions) refused a session."""


def _u32(n: int) -> bytes:
    return struct.pack(">I", n)


def _string(data: bytes) -> bytes:
    return _u32(len(data)) + data


class Control:
    """One connection to a master's control socket."""

    def __init__(self, sock: trio.socket.SocketType):
        self.sock = sock
        self.buffer = bytearray()
        self.request = 0
        self.status: int | None = None  # the session's exit status, once the master sent it
        self.ended = False  # the master closed the connection

    @classmethod
    async def connect(cls, path: str) -> Control:
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            await sock.connect(path)
        except OSError as e:
            sock.close()
            raise MuxGone(f"the master connection is gone ({e.strerror})") from None
        control = cls(sock)
        try:
            # Each side says hello first: the master's, then ours.
            hello = await control.receive()
            if hello is None:  # a master dying as we came
                raise MuxGone("the master connection is gone (it closed its control socket)")
            if hello[0] != MUX_MSG_HELLO or struct.unpack_from(">I", hello[1])[0] != MUX_VERSION:
                raise MuxError("the master does not speak version 4 of the multiplexing protocol")
            await control.send(_u32(MUX_MSG_HELLO) + _u32(MUX_VERSION))
        except BaseException:
            control.close()
            raise
        return control

    async def send(self, payload: bytes) -> None:
        data = memoryview(_u32(len(payload)) + payload)
        try:
            while data:
                sent = await self.sock.send(data)
                data = data[sent:]
        except OSError as e:
            raise MuxError(f"the master connection is gone ({e.strerror})") from None

    async def send_fd(self, fd: int) -> None:
        try:
            await self.sock.sendmsg([b"\0"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))])
        except OSError as e:
            raise MuxError(f"the master connection is gone ({e.strerror})") from None

    async def receive(self) -> tuple[int, bytes] | None:
        """The next packet (type, body), or None when the master closed the connection."""
        while True:
            if len(self.buffer) >= 4:
                size = struct.unpack_from(">I", self.buffer)[0]
                if len(self.buffer) >= 4 + size:
                    packet = bytes(self.buffer[4 : 4 + size])
                    del self.buffer[: 4 + size]
                    if size < 4:
                        raise MuxError("a malformed packet from the master")
                    return struct.unpack_from(">I", packet)[0], packet[4:]
            try:
                chunk = await self.sock.recv(65536)
            except OSError:
                return None
            if not chunk:
                return None
            self.buffer += chunk

    async def new_session(self, command: bytes, stdin: int, stdout: int, stderr: int, agent: bool = False,
                          environment: tuple[bytes, ...] = ()) -> int:
        """Open a session running `command` (no terminal, no escape character) on the
        given descriptors; returns the master's session id."""
        self.request += 1
        payload = b"".join((
            _u32(MUX_C_NEW_SESSION), _u32(self.request), _string(b""),
            _u32(0), _u32(0), _u32(1 if agent else 0), _u32(0),  # tty, X11, agent, subsystem
            _u32(NO_ESCAPE), _string(b""), _string(command),
            *(_string(variable) for variable in environment),
        ))
        await self.send(payload)
        for fd in (stdin, stdout, stderr):
            await self.send_fd(fd)
        with trio.move_on_after(OPEN_TIMEOUT) as waited:
            reply = await self.receive()
        if waited.cancelled_caught:
            raise MuxError(f"the master did not open the session within {OPEN_TIMEOUT:g}s")
        if reply is None:
            raise MuxError("the master connection closed before the session opened")
        kind, body = reply
        if kind == MUX_S_SESSION_OPENED:
            return struct.unpack_from(">II", body)[1]
        if kind in (MUX_S_PERMISSION_DENIED, MUX_S_FAILURE):
            raise MuxRefused(f"the master refused the session: {_reason(body)}")
        raise MuxError(f"unexpected reply from the master: {kind:#010x}")

    async def exit_status(self) -> int | None:
        """Wait for the session to end: its exit status, or None if the master went
        away without one (its connection dropped). Safe to call again after a
        cancellation."""
        while not self.ended:
            packet = await self.receive()
            if packet is None:
                self.ended = True
            elif packet[0] == MUX_S_EXIT_MESSAGE:
                self.status = struct.unpack_from(">II", packet[1])[1]
        return self.status

    async def terminate(self) -> None:
        """Ask the master to end its connection."""
        self.request += 1
        await self.send(_u32(MUX_C_TERMINATE) + _u32(self.request))
        await self.receive()

    def close(self) -> None:
        self.sock.close()


def _reason(body: bytes) -> str:
    try:
        size = struct.unpack_from(">I", body, 4)[0]
        return body[8 : 8 + size].decode("utf-8", "replace")
    except struct.error:
        return "no reason given"
