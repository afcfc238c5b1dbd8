"""The dongle firmware of esphome/: ESPHome's own validation of every configuration, and the
forwarding run for real on ESPHome's host platform.

ESPHome lives in its own venv (scripts/setup makes it, pinned by esphome/requirements.txt); these
tests only shell out to it, so they run the same under the newest and the oldest Home Assistant.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self, TypeGuard

import pytest

from custom_components.smarty_p1.connection import probe
from custom_components.smarty_p1.mqtt_source import payload_bytes
from custom_components.smarty_p1.p1 import Telegram, TelegramDecoder
from custom_components.smarty_p1.p1.simulator import MeterSimulator, PtyMeter
from custom_components.smarty_p1.p1.sources import TcpSource

from .mqtt_broker import free_port

REPO = Path(__file__).parent.parent
ESPHOME_DIR = REPO / "esphome"
FIXTURES = Path(__file__).parent / "fixtures" / "esphome"
SECRETS = FIXTURES / "secrets.yaml"
CONFIGS = sorted(path.name for path in ESPHOME_DIR.glob("smarty-p1-*.yaml"))
# A README block marked <!-- esphome-example: FILE --> is FILE in one piece.
EXAMPLE = re.compile(r"<!-- esphome-example: (\S+) -->\n```yaml\n(.*?)```", re.DOTALL)
# Validation takes about a second; a cold host build half a minute on two busy cores.
CONFIG_TIMEOUT = 120
BUILD_TIMEOUT = 900


def esphome_executable() -> Path:
    """The pinned ESPHome of scripts/setup; fails (never skips) when it is missing or stale."""
    override = os.environ.get("SMARTY_P1_ESPHOME")
    if override:
        executable = Path(override)
    else:
        # scripts/run points VIRTUAL_ENV at the test venv in both runs; ESPHome's is beside it.
        venv = os.environ.get("VIRTUAL_ENV", sys.prefix)
        executable = Path(f"{venv}-esphome") / "bin" / "esphome"
    if not executable.is_file():
        pytest.fail(f"ESPHome is not installed at {executable}: run scripts/setup")
    pinned = (ESPHOME_DIR / "requirements.txt").read_text().strip().removeprefix("esphome==")
    version = subprocess.run(
        [executable, "version"], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    if pinned not in version.split():
        pytest.fail(
            f"{executable} is {version.strip()}, not the pinned {pinned}: run scripts/setup"
        )
    return executable


def no_network_prefix() -> list[str]:
    """`unshare -n` where this process may make a network namespace: validation then proves
    that it needs no network. Elsewhere (a host run without root) it runs as it is."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return []
    try:
        subprocess.run([unshare, "-n", "true"], check=True, capture_output=True, timeout=10)
    except subprocess.CalledProcessError:
        return []
    return [unshare, "-n"]


def workspace(tmp_path: Path) -> Path:
    """A copy of esphome/ with the test secrets: ESPHome writes next to the configuration."""
    work = tmp_path / "esphome"
    shutil.copytree(ESPHOME_DIR, work, ignore=shutil.ignore_patterns("secrets.yaml", ".esphome"))
    shutil.copy(SECRETS, work / "secrets.yaml")
    return work


def validate(config: Path) -> str:
    """`esphome config` of a file; its validated configuration (YAML text). Fails with
    ESPHome's own output when the file does not validate."""
    result = subprocess.run(
        [*no_network_prefix(), esphome_executable(), "config", config.name],
        cwd=config.parent,
        capture_output=True,
        text=True,
        timeout=CONFIG_TIMEOUT,
        check=False,
    )
    if result.returncode != 0 or "Configuration is valid!" not in result.stderr:
        pytest.fail(f"esphome config {config.name} failed:\n{result.stderr}\n{result.stdout}")
    return result.stdout


# ESPHome's output is YAML with its own tags (!secret, !lambda): its venv's PyYAML reads it, each
# tag as the plain value it tags, into JSON.
TO_JSON = """
import json, sys, yaml
class Loader(yaml.SafeLoader):
    pass
Loader.add_multi_constructor("!", lambda loader, tag, node: loader.construct_scalar(node))
json.dump(yaml.load(sys.stdin, Loader=Loader), sys.stdout)
"""


def as_data(text: str) -> dict[str, Any]:
    """ESPHome YAML (a configuration, or what `esphome config` printed) as data."""
    python = esphome_executable().parent / "python"
    result = subprocess.run(
        [python, "-c", TO_JSON], input=text, capture_output=True, text=True, check=True
    )
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def validated(text: str) -> dict[str, Any]:
    """A validated configuration as data, without the substitutions that produced it."""
    data = as_data(text)
    data.pop("substitutions", None)
    return data


def readme_examples() -> dict[str, str]:
    """The complete examples of esphome/README.md, by the file each one stands for."""
    return dict(EXAMPLE.findall((ESPHOME_DIR / "README.md").read_text()))


def test_every_configuration_is_tested() -> None:
    """The four board and transport combinations are shipped; two complete examples exist."""
    assert CONFIGS == [
        "smarty-p1-esp32-mqtt.yaml",
        "smarty-p1-esp32-tcp.yaml",
        "smarty-p1-esp8266-mqtt.yaml",
        "smarty-p1-esp8266-tcp.yaml",
    ]
    assert sorted(readme_examples()) == ["smarty-p1-esp32-mqtt.yaml", "smarty-p1-esp32-tcp.yaml"]


@pytest.mark.parametrize("name", CONFIGS)
def test_configuration_validates(tmp_path: Path, name: str) -> None:
    """ESPHome accepts the configuration; the dongle forwards and never decodes."""
    config = validated(validate(workspace(tmp_path) / name))
    assert config["uart"][0]["baud_rate"] == 115200
    assert config["uart"][0]["rx_pin"]["inverted"] is True
    assert "dsmr" not in config
    if name.endswith("-tcp.yaml"):
        assert config["uart_tcp"][0]["role"] == "server"
    else:
        publish = config["uart"][0]["debug"]["sequence"][0]["then"][0]["mqtt.publish"]
        assert publish["retain"] is False


@pytest.mark.parametrize("name", sorted(readme_examples()))
def test_readme_example_is_the_packaged_configuration(tmp_path: Path, name: str) -> None:
    """The copy-paste example validates and is, once validated, the packaged file."""
    work = workspace(tmp_path)
    example = work / "example.yaml"
    example.write_text(readme_examples()[name])
    assert validated(validate(example)) == validated(validate(work / name))


# The forwarding itself, on ESPHome's host platform: a Linux program built with the machine's
# own compiler, incrementally in a cache folder (a cold build is half a minute, then seconds).
HOST_BUILDS = Path.home() / ".cache" / "smarty_p1" / "esphome-host"
BUILT = re.compile(r"Successfully compiled program to path '([^']+)'")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
MESSAGE = "P1MESSAGE "


def build_host(work: Path, name: str, tmp_path: Path, **substitutions: str) -> Path:
    """Build the host configuration `name` of work/ and return a copy of the program."""
    compiler = os.environ.get("CXX", "g++").split()[0]
    if shutil.which(compiler) is None:
        pytest.fail(f"the host build needs a C++ compiler ({compiler}): run scripts/setup")
    shutil.copy(FIXTURES / name, work / name)
    build = HOST_BUILDS / Path(name).stem
    build.mkdir(parents=True, exist_ok=True)
    command: list[str | Path] = [esphome_executable()]
    for key, value in {**substitutions, "build_path": str(build)}.items():
        command += ["-s", key, value]
    # One build at a time per folder: other test runs on this machine share the cache.
    with (HOST_BUILDS / f"{build.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        result = subprocess.run(
            [*command, "compile", name],
            cwd=work,
            # ESPHome keeps the build only if its record of the last one survives the workspace.
            env={**os.environ, "ESPHOME_DATA_DIR": str(build / "data")},
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT,
            check=False,
        )
        found = BUILT.search(result.stderr + result.stdout)
        if result.returncode != 0 or found is None:
            pytest.fail(f"esphome compile {name} failed:\n{result.stderr}\n{result.stdout}")
        # The copy runs while another test may relink the cached program.
        program = tmp_path / "program"
        shutil.copy(found.group(1), program)
    return program


class HostFirmware:
    """The host program running, its output collected line by line."""

    def __init__(self, program: Path, prefs: Path) -> None:
        self._lines: list[str] = []
        self._changed = threading.Condition()
        self._process = subprocess.Popen(
            [program],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={"ESPHOME_PREFDIR": str(prefs), "PATH": os.environ.get("PATH", "")},
            text=True,
            errors="replace",
        )
        self._reader = threading.Thread(target=self._read, name="esphome-host-output")
        self._reader.start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            with self._changed:
                self._lines.append(ANSI.sub("", line.rstrip("\n")))
                self._changed.notify_all()

    def wait_for(self, text: str, timeout: float = 30.0) -> None:
        """Until a line of the output contains text."""
        with self._changed:
            if not self._changed.wait_for(
                lambda: any(text in line for line in self._lines), timeout
            ):
                pytest.fail(f"no {text!r} from the firmware:\n" + "\n".join(self._lines))

    def messages(self, total: int, timeout: float = 30.0) -> list[bytes]:
        """The messages printed so far, once they hold `total` bytes."""

        def printed() -> list[bytes]:
            return [
                bytes.fromhex(line.partition(MESSAGE)[2]) for line in self._lines if MESSAGE in line
            ]

        with self._changed:
            if not self._changed.wait_for(lambda: sum(map(len, printed())) >= total, timeout):
                pytest.fail(f"the firmware printed {printed()!r}, not {total} bytes")
            return printed()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._process.terminate()
        self._process.wait(timeout=10)
        self._reader.join()


@pytest.fixture
def tty_link(quiet_pty: PtyMeter) -> Iterator[str]:
    """The pty by a path of two levels: ESPHome's host UART takes no deeper path."""
    link = Path(tempfile.gettempdir()) / f"smarty-p1-{uuid.uuid4().hex}"
    link.symlink_to(quiet_pty.path)
    yield str(link)
    link.unlink()


async def test_tcp_forwards_the_bytes_untouched(
    tmp_path: Path, quiet_pty: PtyMeter, tty_link: str, simulator: MeterSimulator, meter_key: bytes
) -> None:
    """common/tcp.yaml hands a client every byte of the line as it came, 0x00 included, and
    the integration's network source reads verified telegrams from it."""
    port = free_port()
    program = build_host(
        workspace(tmp_path), "host-tcp.yaml", tmp_path, p1_tty=tty_link, p1_tcp_port=str(port)
    )
    with HostFirmware(program, tmp_path) as firmware:
        firmware.wait_for(f"Listening on {port}")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        # Bytes from before the dongle took the client are dropped by design: send after.
        await asyncio.to_thread(firmware.wait_for, "Client connected from")
        line = b"".join(simulator.next_frame() for _ in range(3)) + bytes(range(256))
        quiet_pty.inject(line)
        async with asyncio.timeout(10):
            assert await reader.readexactly(len(line)) == line
        writer.close()
        await writer.wait_closed()

        # The dongle serves the next client once the first has gone, as the integration
        # reconnects: its probe gets a telegram that verifies with the key.
        source = TcpSource("127.0.0.1", port)
        probing = asyncio.create_task(probe(source, meter_key, 10))
        sent = []
        while not probing.done():
            sent.append(simulator.next_frame())
            quiet_pty.inject(sent[-1])
            await asyncio.wait([probing], timeout=0.3)
        assert probing.result().raw in telegrams_of(b"".join(sent), meter_key)


def test_mqtt_messages_carry_the_bytes(
    tmp_path: Path, quiet_pty: PtyMeter, tty_link: str, simulator: MeterSimulator, meter_key: bytes
) -> None:
    """common/mqtt.yaml's chunking publishes a telegram as one message (flushed by the idle
    timeout), a longer burst in messages of at most the size bound, the bytes as they came (0x00
    included), and the integration's MQTT payload decoding turns them back into the telegrams.

    The host's loop drains a readable UART at once, so the timeout's margin over the chip's
    16 ms between reads is not measured here (the README says why it is 50 ms)."""
    work = workspace(tmp_path)
    debug = as_data((work / "common" / "mqtt.yaml").read_text())["uart"][0]["debug"]
    assert debug["direction"] == "RX"
    assert debug["dummy_receiver"] is True
    bound = int(debug["after"]["bytes"])
    program = build_host(
        work,
        "host-mqtt.yaml",
        tmp_path,
        p1_tty=tty_link,
        after_bytes=str(bound),
        after_timeout=str(debug["after"]["timeout"]),
        payload=debug["sequence"][0]["mqtt.publish"]["payload"],
    )
    frames = [simulator.next_frame() for _ in range(3)]
    noise = bytes(range(256))
    assert len(frames[0]) < bound < len(frames[1] + frames[2])
    with HostFirmware(program, tmp_path) as firmware:
        firmware.wait_for("setup() finished successfully")
        quiet_pty.inject(frames[0])
        alone = firmware.messages(len(frames[0]))
        quiet_pty.inject(frames[1] + frames[2])
        burst = firmware.messages(len(frames[0] + frames[1] + frames[2]))[len(alone) :]
        quiet_pty.inject(noise)
        everything = firmware.messages(len(frames[0] + frames[1] + frames[2] + noise))
    # One message per telegram; a second only if the loop stalled past the idle timeout.
    assert b"".join(alone) == frames[0]
    assert len(alone) <= 2
    assert b"".join(burst) == frames[1] + frames[2]
    assert all(len(message) <= bound for message in burst)
    assert 2 <= len(burst) <= 3
    assert everything[-1].endswith(noise)
    received = [payload_bytes(message) for message in everything]
    assert b"".join(received) == b"".join(frames) + noise
    decoder = TelegramDecoder(meter_key)
    telegrams = [item.raw for data in received for item in decoder.feed(data) if is_telegram(item)]
    assert telegrams == telegrams_of(b"".join(frames), meter_key)
    assert len(telegrams) == len(frames)


def is_telegram(item: object) -> TypeGuard[Telegram]:
    """Whether the decoder's item is a verified telegram (not a rejected frame)."""
    return isinstance(item, Telegram)


def telegrams_of(line: bytes, key: bytes) -> list[bytes]:
    """The plaintext of every telegram that verifies in bytes read straight off the line."""
    return [item.raw for item in TelegramDecoder(key).feed(line) if is_telegram(item)]
