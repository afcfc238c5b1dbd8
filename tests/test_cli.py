"""The console reader and the simulator command, through real files, ptys and sockets.

Most tests call ``main`` in-process (so coverage sees them); the end-to-end ones start
``python -m custom_components.smarty_p1`` as a real process, as a user would.
"""

from __future__ import annotations

import asyncio
import json
import os
import runpy
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from custom_components.smarty_p1.p1 import REASONS, Telegram, TelegramDecoder, crc16_arc
from custom_components.smarty_p1.p1.cli import main
from custom_components.smarty_p1.p1.simulator import MeterSimulator, PtyMeter, serve_tcp

from .p1_helpers import (  # the fixture replaces conftest's Home Assistant set-up
    NEXXTLAB,
    auto_enable_custom_integrations,  # noqa: F401
    frame,
    key,
    plaintext,
    vector,
    vector_names,
)
from .test_integrity import OWN_AUTH_KEY, VaryingMeter

KEY = key(NEXXTLAB).hex().upper()
REPO = Path(__file__).parent.parent
MODULE = [sys.executable, "-m", "custom_components.smarty_p1"]
TIMEOUT = 30


def _capture(tmp_path: Path, data: bytes, name: str = "capture.bin") -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line]


def _expected_view() -> dict[str, Any]:
    (telegram,) = TelegramDecoder(key(NEXXTLAB)).feed(frame(NEXXTLAB))
    assert isinstance(telegram, Telegram)
    return telegram.as_dict()


def test_read_file_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["read", "--key", KEY, "--file", _capture(tmp_path, frame(NEXXTLAB))]) == 0
    out = capsys.readouterr().out
    assert "Lux5\\253663629_D  system title 534147677001BD54  frame counter 370915" in out
    assert "Energy imported (P+)" in out
    assert "6.695 kWh" in out
    assert "SAG1030700114004" in out
    assert "2018-01-30T10:21:22+01:00" in out
    # Units the 2018 firmware left out come from the catalog.
    assert "77.376 kVA" in out
    assert KEY not in out


def test_read_file_json_and_hex_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    binary = _capture(tmp_path, frame(NEXXTLAB))
    hex_text = _capture(tmp_path, (vector(NEXXTLAB)["frame_hex"] + "\n").encode(), "frame.hex")
    for path in (binary, hex_text):
        assert main(["read", "--key", KEY, "--file", path, "--json"]) == 0
        assert _json_lines(capsys.readouterr().out) == [_expected_view()]


def test_read_file_stats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    case = next(
        case
        for case in vector("enc_negative_cases")["cases"]
        if case["name"] == "two_frames_back_to_back"
    )
    path = _capture(tmp_path, b"noise" + bytes.fromhex(case["frame_hex"]))
    assert main(["read", "--key", KEY, "--file", path, "--stats"]) == 0
    (stats,) = _json_lines(capsys.readouterr().out)
    assert stats["telegrams"] == 1
    assert stats["rejected"] == {**dict.fromkeys(REASONS, 0), "crc": 1}
    assert stats["bytes"] == 5 + len(bytes.fromhex(case["frame_hex"]))


def test_rejected_frames_go_to_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = plaintext("plain_lu_real_2026_meterlogger").replace(b"273.764", b"273.765")
    path = _capture(tmp_path, frame(NEXXTLAB) + broken + frame(NEXXTLAB))
    assert main(["read", "--key", KEY, "--file", path, "--json"]) == 0
    captured = capsys.readouterr()
    assert len(_json_lines(captured.out)) == 1
    assert "rejected: CRC mismatch" in captured.err
    # The same frame again is a replay (frame counter and meter time no newer): not shown.
    assert "ignored: a replayed telegram" in captured.err


def test_plaintext_needs_no_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _capture(tmp_path, plaintext("plain_lu_real_2026_meterlogger") * 3)
    assert main(["read", "--file", path, "--count", "2", "--json"]) == 0
    views = _json_lines(capsys.readouterr().out)
    assert len(views) == 2
    assert views[0]["encrypted"] is False


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--key", "00112233445566778899AABBCCDDEEFF"], "decryption failed: wrong key?"),
        ([], "encrypted frame received but no decryption key is set"),
    ],
)
def test_wrong_or_missing_key_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    path = _capture(tmp_path, frame(NEXXTLAB) * 2)
    assert main(["read", *args, "--file", path]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == message
    assert captured.out == ""


def test_malformed_key_is_not_echoed(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["read", "--key", KEY[:-1] + "Z", "--file", "x"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "32 hexadecimal characters" in err
    assert KEY[:-1] not in err


def test_key_from_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMARTY_P1_KEY", KEY.lower())
    assert main(["read", "--file", _capture(tmp_path, frame(NEXXTLAB)), "--json"]) == 0
    assert _json_lines(capsys.readouterr().out) == [_expected_view()]


@pytest.mark.parametrize("target", ["nonsense", "127.0.0.1:notaport", "127.0.0.1:1"])
def test_bad_bridge_exits_1(target: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["read", "--key", KEY, "--tcp", target]) == 1
    assert capsys.readouterr().err.startswith("error: ")


def test_missing_serial_port_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["read", "--key", KEY, "--port", "/dev/does-not-exist"]) == 1
    assert "error:" in capsys.readouterr().err


def test_read_port_from_a_pty_meter(capsys: pytest.CaptureFixture[str]) -> None:
    sim = MeterSimulator(key(NEXXTLAB), interval=0.05)
    with PtyMeter(sim) as meter:
        assert main(["read", "--key", KEY, "--port", meter.path, "--count", "3", "--json"]) == 0
    views = _json_lines(capsys.readouterr().out)
    assert len(views) == 3
    assert all(view["header"] == "Lux5\\253663629_D" for view in views)


def test_unplugged_port_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    # Frames further apart than the reader's timeout: it also sees reads that return nothing.
    sim = MeterSimulator(key(NEXXTLAB), interval=0.5)
    meter = PtyMeter(sim)
    timer = threading.Timer(1.2, meter.close)
    timer.start()
    try:
        assert main(["read", "--key", KEY, "--port", meter.path]) == 1
    finally:
        timer.join()
    captured = capsys.readouterr()
    assert "error:" in captured.err
    assert "Energy imported" in captured.out


@contextmanager
def _tcp_meter(sim: MeterSimulator) -> Iterator[int]:
    """A TcpMeter on its own event loop in a thread, so the blocking reader can run here."""
    ready: list[int] = []
    stop = threading.Event()

    async def serve() -> None:
        async with await serve_tcp(sim) as meter:
            ready.append(meter.port)
            await asyncio.to_thread(stop.wait)

    thread = threading.Thread(target=asyncio.run, args=(serve(),))
    thread.start()
    try:
        deadline = time.monotonic() + TIMEOUT
        while not ready and time.monotonic() < deadline:
            time.sleep(0.01)
        yield ready[0]
    finally:
        stop.set()
        thread.join()


def test_read_tcp_from_a_simulated_bridge(capsys: pytest.CaptureFixture[str]) -> None:
    sim = MeterSimulator(key(NEXXTLAB), interval=0.05, mbus=("gas", "water", "heat"))
    with _tcp_meter(sim) as port:
        assert main(["read", "--key", KEY, "--tcp", f"127.0.0.1:{port}", "--count", "2"]) == 0
        assert (
            main(["read", "--key", KEY, "--tcp", f"127.0.0.1:{port}", "--count", "2", "--stats"])
            == 0
        )
    captured = capsys.readouterr()
    assert captured.out.count("Lux5\\253663629_D") == 2
    assert "M-Bus last reading" in captured.out
    # The summary counts every telegram decoded, also those that came in the last chunk.
    assert json.loads(captured.out.splitlines()[-1])["telegrams"] >= 2


def test_bridge_that_hangs_up_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    sim = MeterSimulator(None, interval=0.05)
    with _tcp_meter(sim) as port:
        pass
    assert main(["read", "--tcp", f"127.0.0.1:{port}"]) == 1
    assert "error:" in capsys.readouterr().err


def test_bridge_that_hangs_up_after_a_frame_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:

        def bridge() -> None:
            connection, _ = server.accept()
            with connection:
                connection.sendall(frame(NEXXTLAB))

        thread = threading.Thread(target=bridge)
        thread.start()
        status = main(["read", "--key", KEY, "--tcp", f"127.0.0.1:{server.getsockname()[1]}"])
        thread.join(TIMEOUT)
    assert status == 1
    captured = capsys.readouterr()
    assert "Energy imported" in captured.out
    assert captured.err == "error: the connection was closed\n"


def test_table_of_an_old_plaintext_telegram(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = b"/ISk5\\2ME382-1004\r\n\r\n1-0:1.8.1(00123.456)\r\n1-0:1.7.0()\r\n9-9:9.9.9(x)\r\n!"
    # Without CRC digits (DSMR 2/3) it is refused: the decoder accepts that only when asked.
    assert main(["read", "--file", _capture(tmp_path, body + b"\r\n")]) == 0
    assert capsys.readouterr().err == "rejected: telegram does not end in !CRC\n"
    old = body + f"{crc16_arc(body):04X}\r\n".encode()
    assert main(["read", "--file", _capture(tmp_path, old)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"ISk5\\2ME382-1004  CRC {crc16_arc(body):04X}"
    assert "Energy imported tariff 1           123.456 kWh" in out
    assert "Active power import (P+)           - kW" in out
    assert "9-9:9.9.9     (unknown)                          x" in out


def test_odd_hex_text_is_read_as_bytes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["read", "--file", _capture(tmp_path, b"abc"), "--stats"]) == 0
    assert json.loads(capsys.readouterr().out)["bytes"] == 3


def _run_in_thread(argv: list[str]) -> tuple[threading.Thread, list[int]]:
    status: list[int] = []
    thread = threading.Thread(target=lambda: status.append(main(argv)))
    thread.start()
    return thread, status


def _first_line(capsys: pytest.CaptureFixture[str]) -> str:
    seen = ""
    deadline = time.monotonic() + TIMEOUT
    while "\n" not in seen and time.monotonic() < deadline:
        seen += capsys.readouterr().out
        time.sleep(0.01)
    return seen.split("\n", 1)[0]


def test_simulate_pty_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    thread, status = _run_in_thread(
        ["simulate", "--key", KEY, "--pty", "--interval", "0.05", "--count", "12"]
    )
    path = _first_line(capsys)
    assert path.startswith("/dev/pts/")
    assert main(["read", "--key", KEY, "--port", path, "--count", "2", "--stats"]) == 0
    thread.join(TIMEOUT)
    assert status == [0]
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["telegrams"] >= 2
    assert not os.path.exists(path)


def test_simulate_tcp_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    thread, status = _run_in_thread(
        ["simulate", "--plain", "--tcp", "0", "--interval", "0.05", "--count", "10", "--seed", "4"]
    )
    port = int(_first_line(capsys))
    assert main(["read", "--tcp", f"127.0.0.1:{port}", "--count", "2", "--json"]) == 0
    thread.join(TIMEOUT)
    assert status == [0]
    views = _json_lines(capsys.readouterr().out)
    assert [view["encrypted"] for view in views] == [False, False]


def test_simulate_needs_a_key_unless_plain(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["simulate", "--tcp", "0"])
    assert exited.value.code == 2
    assert "--plain" in capsys.readouterr().err


def test_interrupt_ends_quietly(monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*_args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr("custom_components.smarty_p1.p1.cli._simulate", interrupted)
    assert main(["simulate", "--plain", "--pty"]) == 0


def test_module_entry_point(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _capture(tmp_path, frame(NEXXTLAB))
    monkeypatch.setattr(sys, "argv", ["smarty_p1", "read", "--key", KEY, "--file", path, "--stats"])
    with pytest.raises(SystemExit) as exited:
        runpy.run_module("custom_components.smarty_p1", run_name="__main__")
    assert exited.value.code == 0
    assert json.loads(capsys.readouterr().out)["telegrams"] == 1


# End to end, as separate processes.


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*MODULE, *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MODULE, *args], cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )


def test_process_reads_the_real_frame(tmp_path: Path) -> None:
    path = _capture(tmp_path, frame(NEXXTLAB))
    result = _run("read", "--key", KEY, "--file", path, "--json")
    assert result.returncode == 0, result.stderr
    assert _json_lines(result.stdout) == [_expected_view()]
    wrong = _run("read", "--key", "00" * 16, "--file", path)
    assert wrong.returncode == 2
    assert wrong.stderr.strip() == "decryption failed: wrong key?"


@pytest.mark.parametrize("target", ["--tcp", "--pty"])
def test_processes_simulate_and_read(target: str) -> None:
    where = ["--tcp", "0"] if target == "--tcp" else ["--pty"]
    simulator = _spawn("simulate", "--key", KEY, *where, "--interval", "0.1", "--seed", "9")
    try:
        assert simulator.stdout is not None
        first = simulator.stdout.readline().strip()
        source = ["--tcp", f"127.0.0.1:{first}"] if target == "--tcp" else ["--port", first]
        result = _run("read", "--key", KEY, *source, "--count", "3", "--json")
        assert result.returncode == 0, result.stderr
        views = _json_lines(result.stdout)
        assert len(views) == 3
        counters = [view["frame_counter"] for view in views]
        assert counters == sorted(counters)
    finally:
        simulator.terminate()
        _, err = simulator.communicate(timeout=TIMEOUT)
    assert KEY not in err


def test_output_cut_short_by_the_reader_is_not_an_error(tmp_path: Path) -> None:
    """`read ... | head -1`: the reader stops quietly when its output is closed."""
    capture = _capture(tmp_path, frame(NEXXTLAB) * 200)
    process = subprocess.Popen(
        [*MODULE, "read", "--key", KEY, "--file", capture],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
    )
    assert process.stdout is not None
    process.stdout.readline()
    process.stdout.close()
    _, errors = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 0
    assert b"Broken pipe" not in errors


@pytest.mark.parametrize("name", vector_names("derived_stream"))
def test_derived_vectors_through_the_console_reader(
    name: str, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """Another authentication key, a foreign AAD, tampered frames, plaintext injected: the
    console reader shows exactly the telegrams the vector says verify."""
    capture = tmp_path / "capture.bin"
    capture.write_bytes(
        b"".join([bytes.fromhex(entry["frame_hex"]) for entry in vector(name)["frames"]])
    )
    assert main(["read", "--key", vector(name)["key_hex"], "--file", str(capture), "--json"]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == sum(
        entry["expect"] == "telegram" for entry in vector(name)["frames"]
    ), captured.err


@pytest.mark.parametrize(
    ("aad", "said"),
    [
        (b"\x30" + OWN_AUTH_KEY, "learned from its frames"),
        (b"\x30", "CRC only"),
    ],
    ids=["own-key", "crc-only"],
)
def test_the_console_reader_says_how_telegrams_are_protected(
    tmp_path: Any, capsys: pytest.CaptureFixture[str], aad: bytes, said: str
) -> None:
    simulator = VaryingMeter(bytes.fromhex(KEY), aad=aad)
    capture = tmp_path / "capture.bin"
    capture.write_bytes(b"".join(simulator.next_frame() for _ in range(12)))
    assert main(["read", "--key", KEY, "--file", str(capture), "--json"]) == 0
    captured = capsys.readouterr()
    integrity = [line for line in captured.err.splitlines() if line.startswith("integrity:")]
    assert any(said in line for line in integrity), captured.err
    assert len(captured.out.splitlines()) >= 3
