"""The dongle firmware of esphome/: ESPHome's own validation of every configuration, and the
forwarding run for real on ESPHome's host platform.

ESPHome lives in its own venv (scripts/setup makes it, pinned by esphome/requirements.txt); these
tests only shell out to it, so they run the same under the newest and the oldest Home Assistant.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).parent.parent
ESPHOME_DIR = REPO / "esphome"
SECRETS = Path(__file__).parent / "fixtures" / "esphome" / "secrets.yaml"
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


def validated(text: str) -> dict[str, Any]:
    """A validated configuration as data, without the substitutions that produced it."""
    python = esphome_executable().parent / "python"
    result = subprocess.run(
        [python, "-c", TO_JSON], input=text, capture_output=True, text=True, check=True
    )
    data: dict[str, Any] = json.loads(result.stdout)
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
