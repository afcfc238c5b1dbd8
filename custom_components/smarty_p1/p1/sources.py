"""Where a meter's bytes come from: a serial port, a TCP bridge or a capture file.

No Home Assistant here: the integration, the console reader and the MQTT bridge open the same
sources. Each source is opened and closed again and again by a reading session (session.py);
bytes are pushed to a receiver in the transport's own callback, so no task wakes up per chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import re
import socket
import termios
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import serial_asyncio_fast

BAUDRATE = 115200
# Opening a TCP connection must not hang a reconnect for minutes.
CONNECT_TIMEOUT = 10.0
CLOSE_TIMEOUT = 2.0
# udev's names for USB serial adapters: unlike /dev/ttyUSB0 they survive replugging and reboots.
SERIAL_BY_ID = "/dev/serial/by-id"
_HEX_CAPTURE = re.compile(rb"[0-9A-Fa-f\s]+")

type Receiver = Callable[[bytes], None]


class SourceError(Exception):
    """Reading a meter failed; ``error`` is a stable code (the integration's translation key)."""

    error: ClassVar[str] = "unknown"


class CannotConnect(SourceError):  # noqa: N818 (the name the config flow and its texts use)
    """The port cannot be opened or the host refuses the connection."""

    error = "cannot_connect"


class PortGone(CannotConnect):
    """The serial device does not exist (the cable is unplugged, or named otherwise now)."""

    error = "cannot_connect"


class PortInUse(CannotConnect):
    """Another program holds the serial port: two readers would each get part of the bytes."""

    error = "port_in_use"


class ByteSource(ABC):
    """A meter's byte stream, opened and closed again and again by one reading loop.

    A session ends at EOF, on a read error, when the receiver raises, or when ``finish`` is
    called; ``wait_ended`` says how it ended. ``endless`` is False for a source that has an end
    (a capture file): reaching it is the end of reading, not a cut.
    """

    endless: ClassVar[bool] = True

    def __init__(self) -> None:
        self._receiver: Receiver | None = None
        self._ended: asyncio.Future[None] | None = None

    async def open(self, receiver: Receiver) -> None:
        """Start a session that hands every chunk of bytes to receiver; raises CannotConnect."""
        self._receiver = receiver
        self._ended = asyncio.get_running_loop().create_future()
        await self._start()

    @abstractmethod
    async def _start(self) -> None:
        """Connect and start delivering; raises CannotConnect."""

    def deliver(self, data: bytes) -> None:
        """Hand bytes to the receiver (nothing after the session ended)."""
        ended, receiver = self._ended, self._receiver
        if ended is None or ended.done() or receiver is None:
            return
        try:
            receiver(data)
        except Exception as err:
            # Whatever went wrong ends the session, and wait_ended raises it.
            self.finish(err)

    def finish(self, error: BaseException | None = None) -> None:
        """End the session: normally (None), or with the error wait_ended raises."""
        ended = self._ended
        if ended is None or ended.done():
            return
        if error is None:
            ended.set_result(None)
        else:
            ended.set_exception(error)

    async def wait_ended(self) -> None:
        """Return when the session ends normally (EOF, finish()); raise what else ended it."""
        assert self._ended is not None, "not open"
        await self._ended

    async def close(self) -> None:
        """Stop receiving; safe to call when not open."""
        ended = self._ended
        if ended is not None and ended.done() and not ended.cancelled():
            # Retrieved, so an error nobody waited for is not reported as never retrieved.
            ended.exception()
        self.finish()
        self._receiver = None
        await self._stop()

    @abstractmethod
    async def _stop(self) -> None:
        """Disconnect; safe to call when not connected."""


class _Receiving(asyncio.Protocol):
    """The transport's callbacks, passed on to the source."""

    def __init__(self, source: ByteSource) -> None:
        self._source = source
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self._source.deliver(data)

    def eof_received(self) -> bool:
        self._source.finish()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._source.finish(exc)
        if not self.lost.done():
            self.lost.set_result(None)


class _TransportSource(ByteSource):
    """A source read through an asyncio transport."""

    def __init__(self) -> None:
        super().__init__()
        self._transport: asyncio.BaseTransport | None = None
        self._protocol: _Receiving | None = None

    async def _start(self) -> None:
        transport, protocol = await self._connect(lambda: _Receiving(self))
        self._transport, self._protocol = transport, protocol

    @abstractmethod
    async def _connect(
        self, factory: Callable[[], _Receiving]
    ) -> tuple[asyncio.BaseTransport, _Receiving]:
        """Open the transport; raises CannotConnect."""

    async def _stop(self) -> None:
        """Close the transport and wait until it is closed: a ser2net bridge allows one
        connection, and a serial port must be free before it is opened again."""
        transport, protocol = self._transport, self._protocol
        self._transport = self._protocol = None
        if transport is None or protocol is None:
            return
        await _close(transport, protocol)


async def _close(transport: asyncio.BaseTransport, protocol: _Receiving) -> None:
    """Close a transport and wait until it is closed (at most CLOSE_TIMEOUT)."""
    transport.close()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await protocol.lost


def by_id_names() -> dict[str, str]:
    """udev's stable /dev/serial/by-id names of serial devices, by the device they point to.

    Blocking (it reads the file system): run it in an executor.
    """
    names: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for link in sorted(os.scandir(SERIAL_BY_ID), key=lambda link: link.name):
            names.setdefault(os.path.realpath(link.path), link.path)
    return names


def serial_by_id(device: str) -> str | None:
    """The stable by-id name of a serial device, if udev gave it one (blocking)."""
    if device.startswith(SERIAL_BY_ID + "/"):
        return device
    return by_id_names().get(os.path.realpath(device))


class SerialSource(_TransportSource):
    """A serial port (a USB P1 cable), 115200 8N1, opened exclusively.

    Exclusively, because two programs reading one port each get part of every frame, and every
    frame then looks broken to both. A port configured as ``/dev/ttyUSB0`` is followed by its
    udev by-id name, so a cable that comes back as ``/dev/ttyUSB1`` after a replug is found.
    """

    def __init__(self, device: str) -> None:
        super().__init__()
        self.device = device
        self.followed: str | None = None

    def __str__(self) -> str:
        return self.device

    def _path(self) -> str:
        """What to open: the configured path, or where its by-id name points now."""
        followed = self.followed
        if followed is not None and not os.path.exists(self.device) and os.path.exists(followed):
            return followed
        return self.device

    async def _connect(
        self, factory: Callable[[], _Receiving]
    ) -> tuple[asyncio.BaseTransport, _Receiving]:
        loop = asyncio.get_running_loop()
        path = self._path()
        try:
            transport, protocol = await serial_asyncio_fast.create_serial_connection(
                loop,
                factory,
                url=path,
                baudrate=BAUDRATE,
                bytesize=8,
                parity="N",
                stopbits=1,
                exclusive=True,
            )
        except (OSError, ValueError) as err:
            # pyserial's SerialException is an OSError; ValueError is a malformed path.
            if "exclusively lock" in str(err):
                raise PortInUse(f"{path} is in use by another program") from err
            if getattr(err, "errno", None) == errno.ENOENT:
                raise PortGone(f"{path} is gone (the cable unplugged?)") from err
            raise CannotConnect(f"cannot open {path}: {err}") from err
        assert isinstance(protocol, _Receiving)
        fd = getattr(getattr(transport, "serial", None), "fd", None)
        if isinstance(fd, int):
            # Also refuse later opens of the tty by programs that do not lock (TIOCEXCL).
            with contextlib.suppress(OSError):
                fcntl.ioctl(fd, termios.TIOCEXCL)
        if self.followed is None:
            try:
                self.followed = await loop.run_in_executor(None, serial_by_id, self.device)
            except BaseException:
                # Cancelled meanwhile: nobody else knows of this transport to close it, and
                # its lock would keep the port from every later open.
                await _close(transport, protocol)
                raise
        return transport, protocol


class TcpSource(_TransportSource):
    """A network serial bridge (ser2net, an ESP32 P1 dongle in raw TCP mode)."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__()
        self.host = host
        self.port = port

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"

    async def _connect(
        self, factory: Callable[[], _Receiving]
    ) -> tuple[asyncio.BaseTransport, _Receiving]:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                transport, protocol = await loop.create_connection(
                    factory, self.host.strip("[]"), self.port
                )
        except (OSError, TimeoutError, ValueError) as err:
            raise CannotConnect(f"cannot connect to {self}: {err}") from err
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # A bridge that vanishes without a FIN is otherwise only noticed by silence.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        return transport, protocol


def capture_bytes(data: bytes) -> bytes:
    """A capture file as bytes: hex text (as found in issue reports) is turned back into bytes."""
    if _HEX_CAPTURE.fullmatch(data):
        compact = bytes(data.translate(None, b" \t\r\n\f\v"))
        if len(compact) % 2 == 0:
            return bytes.fromhex(compact.decode("ascii"))
    return data


class FileSource(ByteSource):
    """A capture of a meter's bytes, binary or hex text; read once, to its end."""

    endless = False

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def __str__(self) -> str:
        return str(self.path)

    async def _start(self) -> None:
        try:
            data = await asyncio.to_thread(self.path.read_bytes)
        except OSError as err:
            raise CannotConnect(f"cannot read {self.path}: {err}") from err
        loop = asyncio.get_running_loop()
        loop.call_soon(self.deliver, capture_bytes(data))
        loop.call_soon(self.finish)

    async def _stop(self) -> None:
        """Nothing stays open."""
