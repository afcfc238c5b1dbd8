"""The MQTT bridge against a real mosquitto: a simulated meter on a pty (or a capture, or a
loopback TCP bridge) -> ``bridge`` -> broker -> a subscriber, or Home Assistant's MQTT source.

Most tests run the bridge in-process (so coverage sees it); the last will, the signals and the
run without Home Assistant need a real process.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er
from paho.mqtt.enums import CallbackAPIVersion
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.smarty_p1.const import CONF_CONNECTION_TYPE, CONF_TOPIC, CONNECTION_MQTT
from custom_components.smarty_p1.mqtt_source import payload_bytes
from custom_components.smarty_p1.p1 import Telegram, TelegramDecoder, crc16_arc
from custom_components.smarty_p1.p1 import bridge as bridge_module
from custom_components.smarty_p1.p1.bridge import BrokerSettings, MqttBridge, topic_prefix
from custom_components.smarty_p1.p1.cli import main
from custom_components.smarty_p1.p1.simulator import MeterSimulator, PtyMeter
from custom_components.smarty_p1.p1.sources import FileSource, SerialSource, TcpSource

from .conftest import make_entry, setup, wait_for
from .mqtt_broker import Broker, broker, mqtt_entry
from .p1_helpers import auto_enable_custom_integrations  # noqa: F401 (no hass unless asked)
from .test_simulator import _sent as sent_values

__all__ = ["broker", "mqtt_entry"]

KEY = bytes.fromhex("5A3C9E17B2D4486F8A01C6E3D95B7F20")
WRONG_KEY = bytes.fromhex("00112233445566778899AABBCCDDEEFF")
REPO = Path(__file__).parent.parent
CORE = REPO / "custom_components" / "smarty_p1"
MODULE = [sys.executable, "-m", "custom_components.smarty_p1"]
TIMEOUT = 20.0
INTERVAL = 0.05


class RecordingSimulator(MeterSimulator):
    """A simulated meter that remembers each frame it sent, and its values, by frame counter."""

    def __init__(self, key: bytes | None = KEY, **kwargs: Any) -> None:
        super().__init__(key, interval=INTERVAL, **kwargs)
        self.frames: dict[int, bytes] = {}
        self.values: dict[int, dict[str, Decimal | str]] = {}

    def next_frame(self) -> bytes:
        frame = super().next_frame()
        self.frames[self.frame_counter] = frame
        self.values[self.frame_counter] = dict(self.last_values)
        return frame


class Subscriber:
    """The test's own paho client: every message under ``topic``, in order of arrival. It
    subscribes again after each reconnection (a broker restart)."""

    def __init__(self, port: int, topic: str = "#", tls: dict[str, Any] | None = None) -> None:
        self.topic = topic
        self.messages: list[mqtt.MQTTMessage] = []
        self._subscribed = threading.Event()
        client = self._client = mqtt.Client(CallbackAPIVersion.VERSION2)
        if tls is not None:
            client.tls_set(**tls)
        client.reconnect_delay_set(1, 1)
        client.on_connect = lambda c, _u, _f, _r, _p: c.subscribe(self.topic)
        client.on_subscribe = lambda _c, _u, _m, _r, _p: self._subscribed.set()
        client.on_message = lambda _c, _u, message: self.messages.append(message)
        client.connect_async("127.0.0.1", port)

    def __enter__(self) -> Subscriber:
        self._client.loop_start()
        assert self._subscribed.wait(TIMEOUT), "the subscriber did not subscribe"
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def payloads(self, topic: str) -> list[bytes]:
        """The payloads of one topic so far."""
        return [bytes(m.payload) for m in list(self.messages) if m.topic == topic]

    def views(self, prefix: str) -> list[dict[str, Any]]:
        """The telegrams published under a prefix, as JSON objects."""
        return [json.loads(payload) for payload in self.payloads(f"{prefix}/telegram")]

    def status(self, prefix: str) -> list[str]:
        """The status changes of a prefix so far (not the retained status sent again to a
        subscriber that had to reconnect)."""
        topic = f"{prefix}/status"
        return [
            m.payload.decode() for m in list(self.messages) if m.topic == topic and not m.retain
        ]


async def until(condition: Callable[[], object], within: float = TIMEOUT) -> None:
    """Let the event loop (and the bridge in it) run until condition() holds."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def grown(count: Callable[[], int], by: int = 1) -> None:
    """Wait until count() has grown by ``by`` from now."""
    target = count() + by
    await until(lambda: count() >= target)


def eventually(
    condition: Callable[[], object], process: subprocess.Popen[str] | None = None
) -> None:
    """Wait (blocking) for condition(), failing at once if the bridge process has exited."""
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if process is not None and process.poll() is not None:
            pytest.fail(f"the bridge exited: {process.communicate()}")
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def retained_status(port: int, prefix: str) -> bytes:
    """What a subscriber that comes now is told on the status topic: the retained status."""
    with Subscriber(port, f"{prefix}/status") as late:
        eventually(lambda: late.messages)
    (message,) = late.messages
    assert message.retain
    return bytes(message.payload)


def settings(broker: Broker, **extra: Any) -> BrokerSettings:
    """The test broker, plain."""
    return BrokerSettings("127.0.0.1", broker.port, **extra)


@contextlib.asynccontextmanager
async def running(bridge: MqttBridge) -> AsyncIterator[asyncio.Task[int]]:
    """The bridge reading in the background (its meter open); stopped (as by SIGTERM) at the
    end."""
    task = asyncio.create_task(bridge.run())
    try:
        # A serial port drops what arrived before it was opened.
        await until(lambda: bridge.session.connected or task.done())
        yield task
    finally:
        bridge.stop()
        await asyncio.wait_for(task, TIMEOUT)


def decode(frame: bytes, key: bytes | None = KEY) -> Telegram:
    """The one telegram a frame holds."""
    (telegram,) = TelegramDecoder(key).feed(frame)
    assert isinstance(telegram, Telegram), telegram
    return telegram


def check_published(sim: RecordingSimulator, views: list[dict[str, Any]]) -> None:
    """Each telegram published is one the meter sent, with its values, once, in order."""
    assert views
    counters = [view["frame_counter"] for view in views]
    assert counters == sorted(set(counters))
    for view in views:
        telegram = decode(sim.frames[view["frame_counter"]])
        assert sent_values(telegram) == sim.values[view["frame_counter"]]
        assert view == telegram.as_dict()


def check_raw(sim: RecordingSimulator, payloads: list[bytes]) -> None:
    """Each raw message is one frame of the meter exactly as sent, once, in order; Home
    Assistant's MQTT source reads it as binary (not as hex text)."""
    assert payloads
    counters = []
    for payload in payloads:
        assert payload_bytes(payload) == payload
        counter = decode(payload).frame_counter
        assert counter is not None
        assert payload == sim.frames[counter]
        counters.append(counter)
    assert counters == sorted(set(counters))


def capture(tmp_path: Path, data: bytes) -> str:
    """A capture file of the meter's bytes."""
    path = tmp_path / "capture.bin"
    path.write_bytes(data)
    return str(path)


# Telegrams, raw frames, values.


def test_telegram_topic_equals_read_json(
    tmp_path: Path, broker: Broker, capsys: pytest.CaptureFixture[str]
) -> None:
    """For the same frames, each message on .../telegram is the object `read --json` prints."""
    sim = RecordingSimulator(mbus=("gas", "water", "heat"))
    frames = [sim.next_frame() for _ in range(6)]
    # Noise between frames, and one frame again (a replay): the guard refuses it in both.
    path = capture(tmp_path, b"\x00noise".join([*frames, frames[2]]))
    assert main(["read", "--key", KEY.hex(), "--file", path, "--json"]) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(printed) == 6
    prefix = topic_prefix(sim.serial)
    with Subscriber(broker.port) as sub:
        assert (
            main(
                ["bridge", "--key", KEY.hex(), "--file", path, "--mqtt", f"127.0.0.1:{broker.port}"]
            )
            == 0
        )
        captured = capsys.readouterr()
        eventually(lambda: len(sub.views(prefix)) == 6 and sub.status(prefix)[-1:] == ["offline"])
    assert sub.views(prefix) == printed
    check_published(sim, sub.views(prefix))
    # A capture arrives in one piece, with the replay in it: its raw bytes are held back whole.
    assert sub.payloads(f"{prefix}/raw") == []
    (summary,) = [json.loads(line) for line in captured.out.splitlines()]
    assert summary["published"] == {"raw": 0, "telegram": 6, "values": 0, "status": 2}
    assert summary["raw_withheld"] == 1
    assert summary["stale_telegrams"] == 1
    assert sum(summary["dropped"].values()) == 0
    assert f"publishing under {prefix}" in captured.err
    assert "ignored: a replayed telegram" in captured.err
    assert KEY.hex() not in captured.err.lower()


async def test_pty_meter_raw_telegram_values_and_refusals(
    broker: Broker, capsys: pytest.CaptureFixture[str]
) -> None:
    """Frame by frame from a pty: raw is each frame as sent, telegram and values its reading.
    A replay, a frame that fails its tag, another meter's frame and noise publish nothing."""
    sim = RecordingSimulator()
    other = MeterSimulator(KEY, serial="SAG1030700099999")
    prefix = topic_prefix(sim.serial)
    with PtyMeter(sim, count=0) as meter, Subscriber(broker.port) as sub:
        bridge = MqttBridge(SerialSource(meter.path), KEY, settings(broker), per_value=True)
        async with running(bridge):
            sent = [sim.next_frame() for _ in range(3)]
            for frame in sent:
                meter.inject(frame)
                await grown(lambda: len(sub.views(prefix)))
            await until(lambda: sub.status(prefix) == ["online"])
            damaged = sent[-1][:40] + bytes([sent[-1][40] ^ 1]) + sent[-1][41:]
            for bad in (sent[0], damaged, other.next_frame(), b"line noise\r\n", damaged, sent[1]):
                meter.inject(bad)
                await asyncio.sleep(0.1)
            last = sim.next_frame()
            meter.inject(last)
            await until(
                lambda: len(sub.views(prefix)) == 4 and len(sub.payloads(f"{prefix}/raw")) == 4
            )
        await until(lambda: sub.status(prefix) == ["online", "offline"])
    check_published(sim, sub.views(prefix))
    check_raw(sim, sub.payloads(f"{prefix}/raw"))
    view = sub.views(prefix)[-1]
    for obis, value in view["values"].items():
        assert [json.loads(p) for p in sub.payloads(f"{prefix}/values/{obis}")][-1] == value
    assert len(view["values"]) >= 40
    err = capsys.readouterr().err
    # A kind of failure is said once until a telegram is accepted again.
    assert err.count("rejected: frame damaged on the line") == 1
    assert "ignored: a replayed telegram" in err
    assert "ignored: a telegram of another meter" in err
    stats = bridge.bridge_stats
    assert stats.raw_withheld == 5
    assert stats.published["raw"] == 4
    assert stats.published["values"] == 4 * len(view["values"])
    assert stats.dropped.total() == 0
    assert bridge.guard.stats.foreign == 1
    assert bridge.guard.stats.stale == 2


async def test_raw_frames_without_the_key(broker: Broker) -> None:
    """Without the key the bridge passes the line on: the raw messages, joined, are the bytes
    the meter sent (noise between frames included), and they decode with the key elsewhere."""
    sim = RecordingSimulator()
    prefix = "cellar/meter"
    stream = bytearray()
    with PtyMeter(sim, count=0) as meter, Subscriber(broker.port) as sub:
        bridge = MqttBridge(SerialSource(meter.path), None, settings(broker), prefix=prefix)
        # Frames the bridge cannot open still show that the line is alive.
        bridge.session.silence_timeout = 0.3
        async with running(bridge):
            await until(lambda: sub.status(prefix) == ["online"])
            for index in range(5):
                await asyncio.sleep(0.1)
                frame = sim.next_frame()
                data = frame if index % 2 else b"\x00\xffnoise/" + frame
                meter.inject(data)
                stream += data
                await grown(lambda: len(sub.payloads(f"{prefix}/raw")))
        raw = sub.payloads(f"{prefix}/raw")
    assert b"".join(raw) == stream
    assert all(payload_bytes(payload) == payload for payload in raw)
    telegrams = TelegramDecoder(KEY).feed(b"".join(raw))
    assert [t.frame_counter for t in telegrams if isinstance(t, Telegram)] == [1, 2, 3, 4, 5]
    assert sub.payloads(f"{prefix}/telegram") == []
    assert bridge.stats.rejected["key_required"] == 5
    assert bridge.session.reconnects == 0
    assert bridge.bridge_stats.raw_withheld == 0


def test_telegram_without_serial_needs_a_prefix(
    tmp_path: Path, broker: Broker, capsys: pytest.CaptureFixture[str]
) -> None:
    """The default prefix is the serial number: a meter that sends none needs a prefix."""
    telegram = MeterSimulator(None).next_frame()
    body = telegram[: telegram.rindex(b"!") + 1]
    body = b"".join(line for line in body.splitlines(keepends=True) if b":42.0.0" not in line)
    path = capture(tmp_path, body + b"%04X\r\n" % crc16_arc(body))
    assert decode(Path(path).read_bytes(), None).serial is None
    assert main(["bridge", "--file", path, "--mqtt", f"127.0.0.1:{broker.port}"]) == 2
    assert "carry no serial number: give a topic prefix" in capsys.readouterr().err


def test_nothing_secret_in_a_repr(tmp_path: Path) -> None:
    broker = BrokerSettings("broker", 1883, "meter", "s3cret")
    bridge = MqttBridge(FileSource(tmp_path / "capture.bin"), KEY, broker, prefix="m")
    for text in (repr(bridge), repr(bridge.publisher), repr(broker), str(broker)):
        assert "s3cret" not in text
        assert KEY.hex() not in text.lower()
    assert repr(bridge) == f"MqttBridge({tmp_path / 'capture.bin'}, prefix='m')"


def test_encrypted_frames_without_key_or_prefix(
    tmp_path: Path, broker: Broker, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without the key the serial stays inside the frame, so the prefix is needed: said, exit 2,
    and the broker is never contacted."""
    sim = MeterSimulator(KEY)
    path = capture(tmp_path, sim.next_frame() * 2)
    with Subscriber(broker.port) as sub:
        assert main(["bridge", "--file", path, "--mqtt", f"127.0.0.1:{broker.port}"]) == 2
        time.sleep(0.2)
    err = capsys.readouterr().err
    assert "no decryption key is set: give the key, or a topic prefix" in err
    assert sub.messages == []


@pytest.mark.parametrize("prefix", [None, "cellar/meter"])
def test_wrong_key_publishes_nothing(
    tmp_path: Path, broker: Broker, capsys: pytest.CaptureFixture[str], prefix: str | None
) -> None:
    """A wrong key: said on stderr, exit 2, nothing on raw or telegram; with a prefix the status
    is left at offline."""
    sim = MeterSimulator(KEY)
    path = capture(tmp_path, b"".join(sim.next_frame() for _ in range(3)))
    argv = [
        "bridge",
        "--key",
        WRONG_KEY.hex(),
        "--file",
        path,
        "--mqtt",
        f"127.0.0.1:{broker.port}",
    ]
    with Subscriber(broker.port) as sub:
        assert main(argv + (["--prefix", prefix] if prefix else [])) == 2
        time.sleep(0.2)
    captured = capsys.readouterr()
    # The key is called wrong once the frames prove it (two that do not decrypt at all).
    assert "decryption failed: wrong key?" in captured.err.splitlines()
    assert WRONG_KEY.hex() not in captured.err.lower()
    published = {message.topic for message in sub.messages}
    if prefix is None:
        assert published == set()
    else:
        assert published == {f"{prefix}/status"}
        assert sub.status(prefix)[-1] == "offline"
        assert retained_status(broker.port, prefix) == b"offline"
    assert json.loads(captured.out)["published"]["telegram"] == 0


# Through cuts: the broker, the meter, a broker that stops reading.


async def test_broker_restart_and_meter_unplug(tmp_path: Path, broker: Broker) -> None:
    """The broker restarts (forgetting the retained status) and the meter's cable is pulled and
    plugged in again: the bridge comes back to both by itself, and all it publishes is right."""
    sim = RecordingSimulator()
    prefix = topic_prefix(sim.serial)
    # The port as udev names it: the same name when the cable comes back.
    link = tmp_path / "ttyP1"
    meter = PtyMeter(sim)
    link.symlink_to(meter.path)
    try:
        with Subscriber(broker.port) as sub:
            bridge = MqttBridge(SerialSource(str(link)), KEY, settings(broker))
            async with running(bridge):
                await until(lambda: len(sub.views(prefix)) >= 5)
                await asyncio.to_thread(broker.restart)
                await grown(lambda: len(sub.views(prefix)), 5)
                assert bridge.bridge_stats.broker_connections == 2
                assert await asyncio.to_thread(retained_status, broker.port, prefix) == b"online"

                meter.close()
                await until(lambda: sub.status(prefix)[-1:] == ["offline"])
                meter = PtyMeter(sim)
                link.unlink()
                link.symlink_to(meter.path)
                await until(lambda: sub.status(prefix)[-1:] == ["online"])
                await grown(lambda: len(sub.views(prefix)), 5)
    finally:
        meter.close()
    check_published(sim, sub.views(prefix))
    check_raw(sim, sub.payloads(f"{prefix}/raw"))
    assert bridge.session.reconnects == 1
    # What came while the broker was away was dropped, not kept for later.
    assert bridge.bridge_stats.dropped.total() > 0


@contextlib.contextmanager
def serial_bridge(data: bytes, go: threading.Event) -> Iterator[int]:
    """A loopback TCP serial bridge that sends ``data`` at once when ``go`` is set."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        done = threading.Event()

        def serve() -> None:
            connection, _ = server.accept()
            with connection:
                go.wait(TIMEOUT)
                connection.sendall(data)
                done.wait(TIMEOUT)

        thread = threading.Thread(target=serve)
        thread.start()
        try:
            yield server.getsockname()[1]
        finally:
            go.set()
            done.set()
            thread.join(TIMEOUT)


async def test_backlog_towards_a_stalled_broker_is_bounded(broker: Broker) -> None:
    """A broker that stops reading (SIGSTOP) while frames pour in: once the kernel's buffers
    are full, at most ``queue`` messages wait in paho, the rest are dropped and counted. The
    broker then dies with messages still waiting: they count as dropped too, and the bridge
    connects to the broker that takes its place."""
    sim = RecordingSimulator()
    frames = 3000
    stream = b"".join(sim.next_frame() for _ in range(frames))
    go = threading.Event()
    process = broker._process
    assert process is not None
    with serial_bridge(stream, go) as port:
        source = TcpSource("127.0.0.1", port)
        bridge = MqttBridge(source, KEY, settings(broker), prefix="m", queue=50)
        async with running(bridge):
            await until(lambda: bridge.bridge_stats.broker_connections == 1)
            # The kernel would grow the send buffer to megabytes, as much as the frames hold:
            # kept small, it is full long before the last frame, whatever the machine's pace.
            connection = bridge.publisher._client.socket()
            assert isinstance(connection, socket.socket)
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
            process.send_signal(signal.SIGSTOP)
            try:
                go.set()
                await until(lambda: bridge.stats.telegrams == frames)
                assert len(bridge.publisher._unsent) == 50
                assert bridge.bridge_stats.dropped["telegram"] > frames / 2
            finally:
                process.kill()
                process.wait(TIMEOUT)
            broker.start()
            await until(lambda: bridge.bridge_stats.broker_connections == 2)
    stats = bridge.bridge_stats
    # Every message was written or counted as dropped: each telegram; online twice, offline.
    assert stats.published["telegram"] + stats.dropped["telegram"] == frames
    assert stats.published["status"] + stats.dropped["status"] == 3
    assert stats.published["telegram"] > 0
    # Raw chunks go through the same accounting; how many are written before the queue fills
    # depends on scheduling, so only their passage is asserted.
    assert stats.published["raw"] + stats.dropped["raw"] > 0


def test_messages_wait_for_the_first_connection_within_the_queue(
    tmp_path: Path, broker: Broker, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before the broker has answered once, messages wait for it, at most ``--queue``."""
    sim = RecordingSimulator()
    path = capture(tmp_path, b"".join(sim.next_frame() for _ in range(10)))
    process = broker._process
    assert process is not None
    with Subscriber(broker.port) as sub:
        # A stopped broker accepts the connection (the kernel does) but does not answer it.
        process.send_signal(signal.SIGSTOP)
        threading.Timer(1.0, process.send_signal, (signal.SIGCONT,)).start()
        argv = ["bridge", "--key", KEY.hex(), "--file", path, "--queue", "5"]
        assert main([*argv, "--mqtt", f"127.0.0.1:{broker.port}", "--prefix", "m"]) == 0
        eventually(lambda: sub.status("m")[-1:] == ["offline"])
    summary = json.loads(capsys.readouterr().out)
    # The capture's 10 telegrams and its raw bytes (one message), then offline as the bridge
    # stops, all before the broker answers: the first 5 waited, the rest were dropped.
    assert summary["dropped"] == {"raw": 1, "telegram": 5, "values": 0, "status": 1}
    # Once connected, the status as it is then.
    assert summary["published"] == {"raw": 0, "telegram": 5, "values": 0, "status": 1}
    assert [view["frame_counter"] for view in sub.views("m")] == [1, 2, 3, 4, 5]
    assert sub.status("m") == ["offline"]


def test_broker_away_for_good(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No broker at all: said once, everything dropped and counted, and the bridge still stops
    (after its drain timeout)."""
    monkeypatch.setattr(bridge_module, "DRAIN_TIMEOUT", 0.3)
    sim = RecordingSimulator()
    path = capture(tmp_path, b"".join(sim.next_frame() for _ in range(3)))
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
        assert (
            main(["bridge", "--key", KEY.hex(), "--file", path, "--mqtt", f"127.0.0.1:{port}"]) == 0
        )
    captured = capsys.readouterr()
    assert captured.err.count("Connection refused; retrying") == 1
    summary = json.loads(captured.out)
    assert summary["dropped"] == {"raw": 1, "telegram": 3, "values": 0, "status": 1}
    assert sum(summary["published"].values()) == 0
    assert summary["broker_connections"] == 0


# Credentials and TLS.

MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
# mosquitto started as root drops to its own user before it reads the password file.
RUN_AS = "user root\n" if os.geteuid() == 0 else ""


@contextlib.contextmanager
def configured_broker(directory: Path, settings: str) -> Iterator[Broker]:
    """A broker of this test with more settings than the plain one."""
    server = Broker(directory)
    server.config.write_text(
        server.config.read_text().replace("allow_anonymous true\n", RUN_AS + settings)
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def password_broker(tmp_path: Path, broker: Broker) -> Iterator[Broker]:
    """A broker that lets in only the user ``meter`` with the password ``s3cret``."""
    if not os.access(MOSQUITTO_PASSWD, os.X_OK):
        pytest.skip("mosquitto_passwd is not installed")
    passwords = tmp_path / "passwords"
    subprocess.run(
        [MOSQUITTO_PASSWD, "-b", "-c", str(passwords), "meter", "s3cret"],
        check=True,
        capture_output=True,
    )
    directory = tmp_path / "secured"
    directory.mkdir()
    with configured_broker(
        directory, f"allow_anonymous false\npassword_file {passwords}\n"
    ) as server:
        yield server


def test_user_and_password(
    tmp_path: Path,
    password_broker: Broker,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """From the environment or a file; a wrong password is said (not shown) and retried."""
    monkeypatch.setattr(bridge_module, "DRAIN_TIMEOUT", 0.5)
    sim = RecordingSimulator()
    path = capture(tmp_path, b"".join(sim.next_frame() for _ in range(2)))
    argv = ["bridge", "--key", KEY.hex(), "--file", path, "--prefix", "m"]
    argv += ["--mqtt", f"127.0.0.1:{password_broker.port}"]
    monkeypatch.setenv("SMARTY_P1_MQTT_USERNAME", "meter")
    monkeypatch.setenv("SMARTY_P1_MQTT_PASSWORD", "s3cret")
    assert main(argv) == 0
    from_environment = json.loads(capsys.readouterr().out)
    monkeypatch.delenv("SMARTY_P1_MQTT_PASSWORD")
    password_file = tmp_path / "password"
    password_file.write_text("s3cret\n")
    assert main([*argv, "--password-file", str(password_file)]) == 0
    from_file = json.loads(capsys.readouterr().out)
    for summary in (from_environment, from_file):
        assert summary["published"]["telegram"] == 2
    password_file.write_text("guessed\n")
    assert main([*argv, "--password-file", str(password_file)]) == 0
    captured = capsys.readouterr()
    assert "refused the connection: Not authorized; retrying" in captured.err
    assert json.loads(captured.out)["published"]["telegram"] == 0
    assert "guessed" not in captured.err + captured.out


def _certificates(directory: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files."""
    now = dt.datetime.now(dt.UTC)
    files: dict[str, Path] = {}

    def name(common_name: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])

    def write(stem: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
        files[stem] = directory / f"{stem}.pem"
        files[stem].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        files[f"{stem}_key"] = directory / f"{stem}.key"
        files[f"{stem}_key"].write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    def builder(subject: str, issuer: str, key: ec.EllipticCurvePrivateKey) -> Any:
        return (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(name(issuer))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    usage = {
        "content_commitment": False,
        "key_encipherment": False,
        "data_encipherment": False,
        "key_agreement": False,
        "encipher_only": False,
        "decipher_only": False,
    }
    ca = (
        builder("smarty_p1 test CA", "smarty_p1 test CA", ca_key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, **usage),
            True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    write("ca", ca_key, ca)
    for stem, purpose in (("server", ExtendedKeyUsageOID.SERVER_AUTH), ("client", None)):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            builder(stem, "smarty_p1 test CA", key)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
            .add_extension(
                x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False, **usage),
                True,
            )
            .add_extension(
                x509.ExtendedKeyUsage([purpose or ExtendedKeyUsageOID.CLIENT_AUTH]), False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
        )
        if stem == "server":
            cert = cert.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                False,
            )
        write(stem, key, cert.sign(ca_key, hashes.SHA256()))
    return files


async def test_tls_with_a_client_certificate(
    tmp_path: Path,
    broker: Broker,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """TLS to a broker that wants a client certificate; a broker that the CA does not vouch for
    is refused (and said), and unreadable certificate files stop the bridge at once."""
    monkeypatch.setattr(bridge_module, "DRAIN_TIMEOUT", 0.5)
    files = _certificates(tmp_path)
    directory = tmp_path / "tls"
    directory.mkdir()
    tls_settings = (
        f"allow_anonymous true\ncafile {files['ca']}\ncertfile {files['server']}\n"
        f"keyfile {files['server_key']}\nrequire_certificate true\n"
    )
    sim = RecordingSimulator()
    frames = b"".join(sim.next_frame() for _ in range(3))
    client = {"certfile": str(files["client"]), "keyfile": str(files["client_key"])}
    with configured_broker(directory, tls_settings) as server:
        with Subscriber(server.port, tls={"ca_certs": str(files["ca"]), **client}) as sub:
            trusted = settings(
                server,
                tls=True,
                ca_file=files["ca"],
                cert_file=files["client"],
                key_file=files["client_key"],
            )
            path = Path(capture(tmp_path, frames))
            bridge = MqttBridge(FileSource(path), KEY, trusted, prefix="m")
            assert await bridge.run() == 0
            await until(lambda: len(sub.views("m")) == 3)
        check_published(sim, sub.views("m"))
        assert "connected to the MQTT broker" in capsys.readouterr().err

        # The system's CAs do not know the test CA.
        untrusted = settings(server, tls=True)
        assert await MqttBridge(FileSource(path), KEY, untrusted, prefix="m").run() == 0
        assert "certificate verify failed" in capsys.readouterr().err

    missing = tmp_path / "missing.pem"
    argv = ["bridge", "--key", KEY.hex(), "--file", str(path), "--mqtt", "127.0.0.1"]
    assert main([*argv, "--ca-file", str(missing)]) == 1
    assert capsys.readouterr().err.startswith("error: cannot use the TLS files: ")


# The command line.


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--mqtt", "broker:port"], "--mqtt wants HOST or HOST:PORT"),
        (["--mqtt", ":1883"], "--mqtt wants HOST or HOST:PORT"),
        (["--mqtt", "broker", "--cert-key", "k.pem"], "--cert-key needs --cert"),
        (["--mqtt", "broker", "--prefix", "smarty/+"], "--prefix: a topic without wildcards"),
        (["--mqtt", "broker", "--prefix", "/"], "--prefix: a topic without wildcards"),
        (["--mqtt", "broker", "--queue", "0"], "--queue: at least 1"),
        (["--mqtt", "broker", "--password-file", "/nonexistent"], "cannot read /nonexistent"),
    ],
)
def test_bad_options(capsys: pytest.CaptureFixture[str], extra: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["bridge", "--file", "capture.bin", *extra])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_password_needs_a_user_name_and_is_never_shown(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMARTY_P1_MQTT_PASSWORD", "s3cret")
    with pytest.raises(SystemExit):
        main(["bridge", "--file", "capture.bin", "--mqtt", "broker"])
    err = capsys.readouterr().err
    assert "a password needs a user name" in err
    assert "s3cret" not in err
    assert "s3cret" not in repr(BrokerSettings("broker", 1883, "meter", "s3cret"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("broker", ("broker", None)),
        ("broker:1884", ("broker", "1884")),
        ("[::1]:1884", ("::1", "1884")),
        ("[::1]", ("::1", None)),
        ("::1", ("::1", None)),
    ],
)
def test_broker_address(text: str, expected: tuple[str, str | None]) -> None:
    from custom_components.smarty_p1.p1.cli import _host_port

    assert _host_port(text) == expected


def test_missing_meter_exits_1(broker: Broker, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bridge", "--key", KEY.hex(), "--mqtt", f"127.0.0.1:{broker.port}"]
    assert main([*argv, "--port", "/dev/does-not-exist"]) == 1
    assert main([*argv, "--tcp", "nonsense"]) == 1
    assert capsys.readouterr().err.count("error: ") == 2


def test_topic_prefix_is_one_safe_level() -> None:
    assert topic_prefix("SAG1030700012345") == "smarty/SAG1030700012345"
    assert topic_prefix("a/b+#c") == "smarty/a_b__c"


# Real processes: the last will, the signals, no Home Assistant.


def spawn(*args: str, cwd: Path = REPO, command: list[str] = MODULE) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*command, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_killed_bridge_is_offline_by_its_last_will(broker: Broker) -> None:
    sim = RecordingSimulator()
    prefix = topic_prefix(sim.serial)
    with PtyMeter(sim) as meter, Subscriber(broker.port) as sub:
        process = spawn(
            "bridge", "--key", KEY.hex(), "--port", meter.path, "--mqtt", f"127.0.0.1:{broker.port}"
        )
        try:
            eventually(lambda: len(sub.views(prefix)) >= 3, process)
            before = sub.status(prefix)
            process.kill()
            process.wait(TIMEOUT)
            eventually(lambda: sub.status(prefix)[-1:] == ["offline"])
        finally:
            if process.poll() is None:
                process.kill()
            _, err = process.communicate(timeout=TIMEOUT)
    assert before == ["online"], err
    assert sub.status(prefix) == ["online", "offline"]
    assert process.returncode == -signal.SIGKILL
    assert retained_status(broker.port, prefix) == b"offline"
    check_published(sim, sub.views(prefix))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_with_a_statistics_line(broker: Broker, signum: signal.Signals) -> None:
    """systemd stops a service with SIGTERM, a terminal with SIGINT: a clean stop, ``offline``
    said by the bridge itself, and what it published and rejected on one line."""
    sim = RecordingSimulator()
    prefix = "cellar/meter"
    with PtyMeter(sim) as meter, Subscriber(broker.port) as sub:
        process = spawn(
            "bridge",
            "--key",
            KEY.hex(),
            "--port",
            meter.path,
            "--mqtt",
            f"127.0.0.1:{broker.port}",
            "--prefix",
            prefix,
        )
        try:
            eventually(lambda: len(sub.views(prefix)) >= 3, process)
            # A frame that fails its tag; the two telegrams after it show it was read.
            meter.inject(b"\xdb\x08" + b"\x00" * 8 + b"\x20\x30" + b"\x00" * 31)
            seen = len(sub.views(prefix))
            eventually(lambda: len(sub.views(prefix)) >= seen + 2, process)
            process.send_signal(signum)
            out, err = process.communicate(timeout=TIMEOUT)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
        eventually(lambda: sub.status(prefix)[-1:] == ["offline"], process)
    assert process.returncode == 0, err
    assert "Traceback" not in err
    assert KEY.hex() not in (out + err).lower()
    summary = json.loads(out.splitlines()[-1])
    assert summary["published"]["telegram"] >= 3
    assert summary["published"]["status"] == 2
    assert summary["telegrams"] >= summary["published"]["telegram"]
    # Zeros where the ciphertext should be: not the start of a telegram under the key.
    assert summary["rejected"]["wrong_key"] == 1
    check_published(sim, sub.views(prefix))


# Home Assistant must not be imported: a finder that refuses it comes first on sys.meta_path,
# and the package is run as ``p1`` from the integration's folder, as on a Raspberry Pi.
WITHOUT_HOME_ASSISTANT = """
import importlib.abc, runpy, sys

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "homeassistant":
            print("refused import:", name, file=sys.stderr, flush=True)
            raise ImportError(f"{name} is not installed here")
        return None

sys.meta_path.insert(0, Refuse())
try:
    runpy.run_module("p1", run_name="__main__", alter_sys=True)
finally:
    loaded = sorted(
        name for name in sys.modules
        if name.partition(".")[0] in ("homeassistant", "custom_components")
    )
    print("loaded:", loaded, file=sys.stderr, flush=True)
"""


def test_runs_without_home_assistant(tmp_path: Path, broker: Broker) -> None:
    sim = RecordingSimulator()
    path = capture(tmp_path, b"".join(sim.next_frame() for _ in range(4)))
    prefix = topic_prefix(sim.serial)
    command = [sys.executable, "-c", WITHOUT_HOME_ASSISTANT]
    with Subscriber(broker.port) as sub:
        process = spawn(
            "bridge",
            "--key",
            KEY.hex(),
            "--file",
            path,
            "--mqtt",
            f"127.0.0.1:{broker.port}",
            "--per-value",
            cwd=CORE,
            command=command,
        )
        out, err = process.communicate(timeout=TIMEOUT * 2)
        assert process.returncode == 0, err
        eventually(lambda: len(sub.views(prefix)) == 4, process)
    assert "refused import" not in err
    assert "loaded: []" in err
    check_published(sim, sub.views(prefix))
    assert json.loads(out)["published"]["values"] > 4 * 40
    read = spawn("read", "--key", KEY.hex(), "--file", path, "--json", cwd=CORE, command=command)
    out, err = read.communicate(timeout=TIMEOUT * 2)
    assert read.returncode == 0, err
    assert [json.loads(line) for line in out.splitlines()] == sub.views(prefix)
    assert "loaded: []" in err


# Home Assistant at the other end.


@pytest.mark.usefixtures("enable_custom_integrations", "entity_registry_enabled_by_default")
@pytest.mark.parametrize("bridge_has_key", [False, True], ids=["raw only", "bridge with key"])
async def test_home_assistant_reads_the_meter_through_the_bridge(  # noqa: PLR0917 (fixtures)
    hass: HomeAssistant,
    mqtt_entry: MockConfigEntry,
    broker: Broker,
    simulator: MeterSimulator,
    pty_meter: PtyMeter,
    meter_key: bytes,
    bridge_has_key: bool,
) -> None:
    """Meter on a pty -> bridge process -> mosquitto -> the integration's MQTT source: every
    value Home Assistant shows is the one the meter sent."""
    if bridge_has_key:
        options = ["--key", meter_key.hex()]
        topic = f"{topic_prefix(simulator.serial)}/raw"
    else:
        # The key stays in Home Assistant.
        options = ["--prefix", "cellar/meter"]
        topic = "cellar/meter/raw"
    process = spawn(
        "bridge", "--port", pty_meter.path, "--mqtt", f"127.0.0.1:{broker.port}", *options
    )
    try:
        entry = make_entry(
            simulator, meter_key, **{CONF_CONNECTION_TYPE: CONNECTION_MQTT, CONF_TOPIC: topic}
        )
        coordinator = await setup(hass, entry)
        await wait_for(hass, lambda: coordinator.health.stats.telegrams >= 5, within=TIMEOUT)
        # The meter stops, so that the last values are the ones Home Assistant shows.
        pty_meter.close()
        await wait_for(
            hass,
            lambda: coordinator.data.telegram.raw == simulator.last_telegram,
            within=TIMEOUT,
        )
    finally:
        process.terminate()
        out, err = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 0, err
    assert meter_key.hex() not in (out + err).lower()
    assert coordinator.health.stats.rejected.total() == 0
    sent = simulator.last_values
    assert sent_values(coordinator.data.telegram) == sent
    compared = 0
    sensors = hass.data["entity_components"]["sensor"]
    for registered in er.async_entries_for_config_entry(er.async_get(hass), entry.entry_id):
        obis = registered.unique_id.split("_")[1]
        entity = sensors.get_entity(registered.entity_id)
        if entity is None or obis not in sent:
            continue
        value = entity.native_value
        if isinstance(value, Decimal | str) and type(value) is type(sent[obis]):
            assert value == sent[obis], obis
            compared += 1
    assert compared >= 20
    assert await hass.config_entries.async_unload(entry.entry_id)
