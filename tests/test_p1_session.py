"""Reading through cuts and the byte sources, without Home Assistant, on real sockets and ptys."""

from __future__ import annotations

import asyncio
import fcntl
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from custom_components.smarty_p1.p1 import P1Error, Telegram, TelegramDecoder
from custom_components.smarty_p1.p1 import sources as sources_module
from custom_components.smarty_p1.p1.session import MeterSession
from custom_components.smarty_p1.p1.simulator import MeterSimulator, PtyMeter, serve_tcp
from custom_components.smarty_p1.p1.sources import (
    CannotConnect,
    FileSource,
    PortInUse,
    SerialSource,
    TcpSource,
    capture_bytes,
    serial_by_id,
)

from .p1_helpers import auto_enable_custom_integrations  # noqa: F401 (no Home Assistant)

TIMEOUT = 10.0


class Collect:
    """What a session hands on, and what it says about the line."""

    def __init__(self) -> None:
        self.telegrams: list[Telegram] = []
        self.errors: list[P1Error] = []
        self.lost: list[str] = []
        self.connected = 0

    def receive(self, items: list[Telegram | P1Error]) -> None:
        for item in items:
            if isinstance(item, Telegram):
                self.telegrams.append(item)
            else:
                self.errors.append(item)

    def session(self, source: sources_module.ByteSource, **kwargs: object) -> MeterSession:
        return MeterSession(
            source,
            TelegramDecoder,
            self.receive,
            on_lost=self.lost.append,
            on_connected=self.count,
            min_delay=0.01,
            max_delay=0.05,
            **kwargs,  # type: ignore[arg-type]
        )

    def count(self) -> None:
        self.connected += 1


async def until(condition: Callable[[], object]) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


class FlakyTcpSource(TcpSource):
    """A bridge whose connect fails with an unexpected error (a bug, a library's own error
    type) the first times: the reading must go on regardless."""

    def __init__(self, host: str, port: int, failures: list[BaseException]) -> None:
        super().__init__(host, port)
        self.failures = failures

    async def _connect(self, factory: Any) -> Any:
        if self.failures:
            raise self.failures.pop(0)
        return await super()._connect(factory)


async def test_nothing_but_cancellation_ends_the_reading() -> None:
    """An unexpected error while reconnecting, and one while closing, are cuts like any other."""
    sim = MeterSimulator(None, interval=0.02)
    collect = Collect()
    async with await serve_tcp(sim) as meter:
        source = FlakyTcpSource("127.0.0.1", meter.port, [])
        session = collect.session(source)
        await session.open()
        task = asyncio.create_task(session.run())
        await until(lambda: len(collect.telegrams) >= 2)
        source.failures.extend([RuntimeError("a bug"), CannotConnect("refused")])
        real_stop = source._stop

        async def broken_stop() -> None:
            await real_stop()
            raise RuntimeError("closing failed")

        source._stop = broken_stop  # type: ignore[method-assign]
        meter.drop_clients()
        await until(lambda: collect.connected >= 2)
        before = len(collect.telegrams)
        await until(lambda: len(collect.telegrams) >= before + 2)
        assert not task.done()
        assert session.reconnects == 1
        assert collect.lost == ["the connection was closed"]
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_silence_is_a_cut() -> None:
    """Bytes that never make a valid telegram do not keep a dead line open."""
    collect = Collect()
    with PtyMeter(MeterSimulator(None), count=0) as pty:
        session = collect.session(SerialSource(pty.path), silence_timeout=0.2)
        await session.open()
        task = asyncio.create_task(session.run())
        pty.inject(b"noise" * 10)
        await until(lambda: collect.lost)
        assert collect.lost[0] == "no valid telegram for 0.2 s"
        await until(lambda: collect.connected >= 2)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_session_that_does_not_reconnect_says_why_it_ended() -> None:
    collect = Collect()
    async with await serve_tcp(MeterSimulator(None, interval=0.02)) as meter:
        session = collect.session(TcpSource("127.0.0.1", meter.port), reconnect=False)
        await session.open()
        await until(lambda: collect.telegrams)
        meter.drop_clients()
        await asyncio.wait_for(session.run(), TIMEOUT)
    assert session.ended_by == "the connection was closed"
    assert collect.lost == []


async def test_a_capture_file_is_read_to_its_end(tmp_path: Path) -> None:
    sim = MeterSimulator(None)
    data = b"".join(sim.next_frame() for _ in range(3))
    path = tmp_path / "capture.txt"
    path.write_text(data.hex(" ", 16))
    collect = Collect()
    session = collect.session(FileSource(path))
    await session.open()
    await asyncio.wait_for(session.run(), TIMEOUT)
    assert len(collect.telegrams) == 3
    assert session.ended_by is None
    with pytest.raises(CannotConnect):
        await collect.session(FileSource(tmp_path / "missing")).open()


def test_capture_bytes() -> None:
    assert capture_bytes(b"2f 41\n42") == b"/AB"
    # Odd hex text is not hex: taken as bytes.
    assert capture_bytes(b"2f4") == b"2f4"


async def test_a_held_serial_port_is_reported_in_use() -> None:
    """Two readers on one port each get part of every frame: the second is refused."""
    with PtyMeter(MeterSimulator(None), count=0) as pty:
        holder = os.open(pty.path, os.O_RDWR | os.O_NOCTTY)
        try:
            fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
            with pytest.raises(PortInUse):
                await SerialSource(pty.path).open(lambda data: None)
        finally:
            os.close(holder)
        ours = SerialSource(pty.path)
        await ours.open(lambda data: None)
        try:
            with pytest.raises(PortInUse):
                await SerialSource(pty.path).open(lambda data: None)
        finally:
            await ours.close()


async def test_a_renumbered_usb_cable_is_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Configured as /dev/ttyUSB0, the cable comes back as /dev/ttyUSB1: its by-id name
    (udev's) is followed."""
    by_id = tmp_path / "by-id"
    by_id.mkdir()
    monkeypatch.setattr(sources_module, "SERIAL_BY_ID", str(by_id))
    sim = MeterSimulator(None, interval=0.02)
    first = PtyMeter(sim)
    configured = tmp_path / "ttyUSB0"
    configured.symlink_to(first.path)
    link = by_id / "usb-FTDI_FT232R_USB_UART_A10K1234-if00-port0"
    link.symlink_to(first.path)
    assert serial_by_id(str(configured)) == str(link)
    collect = Collect()
    source = SerialSource(str(configured))
    session = collect.session(source)
    await session.open()
    task = asyncio.create_task(session.run())
    try:
        await until(lambda: collect.telegrams)
        assert source.followed == str(link)
        first.close()
        configured.unlink()
        link.unlink()
        await until(lambda: collect.lost)
        # Several retries while nothing is plugged in.
        await asyncio.sleep(0.3)
        with PtyMeter(sim) as second:
            link.symlink_to(second.path)
            before = len(collect.telegrams)
            await until(lambda: len(collect.telegrams) > before)
        # The vanished port is warned about once, however many retries failed.
        gone = [
            record
            for record in caplog.records
            if "is gone" in record.getMessage() and record.levelname == "WARNING"
        ]
        assert len(gone) == 1
    finally:
        first.close()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
