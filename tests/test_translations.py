"""Translations: every language has exactly en.json's strings, and the code asks for no other.

The code side is read with ast where a key is written in the code (exceptions, devices, config flow
errors, aborts, steps and menus), and from the entity descriptions themselves where a factory
builds the key from an argument. A new key without an English string, a translation that drifts
from en.json, or an icon for a key that does not exist fails here.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import json
import re
import string
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from homeassistant.const import Platform
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity import EntityDescription
from homeassistant.helpers.translation import async_get_translations

from custom_components.smarty_p1 import config_flow
from custom_components.smarty_p1.connection import SourceError
from custom_components.smarty_p1.const import DOMAIN
from custom_components.smarty_p1.validation import vol

PACKAGE = Path(config_flow.__file__).parent
TRANSLATIONS = PACKAGE / "translations"
# Luxembourg's three languages, Portuguese for its largest foreign community (about 15 % of the
# residents), and Dutch for the DSMR users next door.
LANGUAGES = ("de", "fr", "lb", "nl", "pt")
OTHERS = sorted(path.stem for path in TRANSLATIONS.glob("*.json") if path.stem != "en")
PLATFORMS = {platform.value for platform in Platform}
# Platform modules: their descriptions are read from the objects, as factories build the keys.
PLATFORM_MODULES = [
    importlib.import_module(f"{config_flow.__package__}.{path.stem}")
    for path in sorted(PACKAGE.glob("*.py"))
    if path.stem in PLATFORMS
]
# Text a translation must keep as it is: e-mail addresses, URLs, device paths, OBIS codes.
VERBATIM = re.compile(
    r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+|https?://\S*\w|/dev/[\w/.-]*\w|\b\d-\d:\d+\.\d+\.\d+\b"
)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json.loads keeps the last of two equal keys silently: refuse them instead."""
    keys = [key for key, _ in pairs]
    duplicates = sorted({key for key in keys if keys.count(key) > 1})
    if duplicates:
        raise ValueError(f"duplicate keys {duplicates}")
    return dict(pairs)


def load(language: str) -> dict[str, Any]:
    """A translation file, as Home Assistant would read it (UTF-8), duplicates refused."""
    text = (TRANSLATIONS / f"{language}.json").read_text(encoding="utf-8")
    data = json.loads(text, object_pairs_hook=_unique_keys)
    assert isinstance(data, dict)
    return data


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Dotted path -> string; anything else than objects and strings fails."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{path}."))
        else:
            assert isinstance(value, str), f"{path} is {value!r}, not a string"
            flat[path] = value
    return flat


def placeholders(text: str) -> set[str]:
    """The placeholders of a string, parsed as Home Assistant's translation loader does."""
    return {field for _, field, _, _ in string.Formatter().parse(text) if field is not None}


def test_every_language_is_there() -> None:
    assert set(LANGUAGES) <= set(OTHERS)


def test_english_strings() -> None:
    problems = []
    for path, text in flatten(load("en")).items():
        if not text.strip() or text != text.strip():
            problems.append(f"{path}: empty, or blanks around it: {text!r}")
        # Home Assistant resolves [%key:...%] references only when building core, not for a
        # custom integration: the user would see the reference itself.
        if "[%key" in text:
            problems.append(f"{path}: key reference {text!r}")
        placeholders(text)
    assert problems == []


@pytest.mark.parametrize("language", OTHERS)
def test_translation_matches_english(language: str) -> None:
    english = flatten(load("en"))
    translated = flatten(load(language))
    problems = [f"missing {path}" for path in sorted(english.keys() - translated.keys())]
    problems += [f"not in en.json: {path}" for path in sorted(translated.keys() - english.keys())]
    for path in sorted(english.keys() & translated.keys()):
        text, source = translated[path], english[path]
        if not text.strip() or text != text.strip():
            problems.append(f"{path}: empty, or blanks around it: {text!r}")
        if placeholders(text) != placeholders(source):
            problems.append(f"{path}: placeholders {placeholders(text)} != {placeholders(source)}")
        lost = [token for token in VERBATIM.findall(source) if token not in text]
        if lost:
            problems.append(f"{path}: lost {lost}")
    assert problems == []


@pytest.mark.parametrize("language", OTHERS)
async def test_home_assistant_loads_every_string(hass: HomeAssistant, language: str) -> None:
    """Home Assistant's loader shows English instead of a string whose placeholders differ."""
    translated = load(language)
    for category, strings in translated.items():
        loaded = await async_get_translations(hass, language, category, {DOMAIN})
        assert loaded == flatten(strings, f"component.{DOMAIN}.{category}.")


def test_icons_refer_to_translation_keys() -> None:
    icons = json.loads((PACKAGE / "icons.json").read_text(encoding="utf-8"))
    entities = load("en")["entity"]
    problems = []
    for platform, keys in icons["entity"].items():
        for key, icon in keys.items():
            strings = entities.get(platform, {}).get(key)
            if strings is None:
                problems.append(f"icon for entity.{platform}.{key}, which has no strings")
                continue
            problems += [
                f"icon for state {state} of entity.{platform}.{key}, which has no string"
                for state in icon.get("state", {})
                if state not in strings.get("state", {})
            ]
    assert problems == []


# ---- What the code asks for ------------------------------------------------------------------


@dataclass(frozen=True)
class Use:
    """A string the code asks Home Assistant for: its path in en.json, and where."""

    path: tuple[str, ...]
    where: str
    # The placeholders the code passes, when the code shows them; the string may use no others.
    given: frozenset[str] | None = None


def missing(uses: Iterable[Use], english: Mapping[str, Any]) -> list[str]:
    """What the uses ask for and en.json lacks, as messages."""
    problems = []
    for use in uses:
        node: Any = english
        for part in use.path:
            node = node.get(part) if isinstance(node, Mapping) else None
        dotted = ".".join(use.path)
        if node is None:
            problems.append(f"{use.where}: {dotted} is not in en.json")
            continue
        needed = placeholders(node) if isinstance(node, str) and use.given is not None else set()
        if unknown := needed - (use.given or set()):
            problems.append(f"{use.where}: {dotted} needs {sorted(unknown)}, not given")
    return problems


def with_subclasses[T](cls: type[T]) -> list[type[T]]:
    """A class and all its subclasses (of the modules imported so far)."""
    found: list[type[T]] = []
    todo = [cls]
    while todo:
        found.append(todo.pop())
        todo += found[-1].__subclasses__()
    return found


class Source:
    """One module's syntax tree, with what its module-level names hold."""

    def __init__(self, text: str, module: str) -> None:
        self.tree = ast.parse(text)
        self.module = module
        self.parents = {
            child: node for node in ast.walk(self.tree) for child in ast.iter_child_nodes(node)
        }
        self.names: dict[str, ast.expr] = {}
        for node in self.tree.body:
            pairs: list[tuple[ast.expr, ast.expr | None]] = []
            if isinstance(node, ast.Assign):
                pairs = [(target, node.value) for target in node.targets]
            elif isinstance(node, ast.AnnAssign):
                pairs = [(node.target, node.value)]
            for target, value in pairs:
                if isinstance(target, ast.Name) and value is not None:
                    self.names[target.id] = value

    def caught(self, expr: ast.Attribute) -> set[str] | None:
        """``err.error`` within ``except CannotConnect as err``: the class attribute of the
        exceptions that handler catches, read from the running classes."""
        name = getattr(expr.value, "id", None)
        handler: ast.AST | None = expr
        while handler is not None and not (
            isinstance(handler, ast.ExceptHandler) and handler.name == name
        ):
            handler = self.parents.get(handler)
        if not isinstance(handler, ast.ExceptHandler) or handler.type is None:
            return None
        types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
        module = importlib.import_module(f"{config_flow.__package__}.{self.module}")
        classes = [
            getattr(module, t.id, None) or vars(builtins)[t.id]
            for t in types
            if isinstance(t, ast.Name)
        ]
        found = {
            value
            for cls in classes
            for subclass in with_subclasses(cls)
            if isinstance(value := getattr(subclass, expr.attr, None), str)
        }
        return found or None

    def where(self, node: ast.AST) -> str:
        return f"{self.module}.py:{getattr(node, 'lineno', '?')}"

    def strings(self, expr: ast.expr | None) -> set[str] | None:
        """The strings an expression can give, through module-level names and containers.

        None when it depends on something else (a parameter, an f-string): only the running
        objects can tell then.
        """
        if expr is None or isinstance(expr, ast.JoinedStr):
            return None
        if isinstance(expr, ast.Constant):
            return {expr.value} if isinstance(expr.value, str) else set()
        if isinstance(expr, ast.Name):
            value = self.names.get(expr.id)
            return None if value is None else self.strings(value)
        if isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name):
            return self.caught(expr)
        found: set[str] = set()
        if isinstance(expr, ast.Dict):
            # A table of keys: what it gives are its values.
            for value in expr.values:
                found |= self.strings(value) or set()
            return found
        for node in ast.walk(expr):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.add(node.value)
            elif isinstance(node, ast.Name) and node.id in self.names:
                found |= self.strings(node) or set()
        return found or None


def _call_name(call: ast.Call) -> str:
    if isinstance(call.func, ast.Name):
        return call.func.id
    return call.func.attr if isinstance(call.func, ast.Attribute) else ""


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((kw.value for kw in call.keywords if kw.arg == name), None)


def _given(call: ast.Call, name: str) -> frozenset[str] | None:
    """The keys of a literal placeholder dict passed as ``name``."""
    value = _keyword(call, name)
    if not isinstance(value, ast.Dict):
        return None
    keys = [key.value for key in value.keys if isinstance(key, ast.Constant)]
    return frozenset(str(key) for key in keys) if len(keys) == len(value.keys) else None


def _call_target(call: ast.Call, platform: str | None) -> tuple[str, ...] | None:
    """Where in en.json the ``translation_key`` of a call points, "{}" for the key."""
    name = _call_name(call)
    if name.endswith("create_issue"):
        return ("issues", "{}", "title")
    if _keyword(call, "translation_domain") is not None:
        # Only Home Assistant's exceptions take a translation domain.
        return ("exceptions", "{}", "message")
    if name == "DeviceInfo":
        return ("device", "{}", "name")
    if name.endswith("SelectorConfig"):
        return ("selector", "{}")
    # Anything else with a translation key is an entity (description), only valid in a platform.
    return ("entity", platform, "{}", "name") if platform else None


def _assigned(node: ast.AST, attribute: str) -> ast.expr | None:
    """The value of ``attribute = ...`` or ``self.attribute = ...``, if ``node`` is that."""
    if not isinstance(node, ast.Assign):
        return None
    names = [getattr(target, "attr", getattr(target, "id", None)) for target in node.targets]
    return node.value if attribute in names else None


def translation_key_uses(source: Source) -> tuple[list[Use], list[str]]:
    """Uses of ``translation_key=`` and ``_attr_translation_key``; and keys that can't be read."""
    uses: list[Use] = []
    unreadable: list[str] = []
    platform = source.module if source.module in PLATFORMS else None

    def add(
        node: ast.AST, value: ast.expr, path: tuple[str, ...], given: frozenset[str] | None = None
    ) -> None:
        keys = source.strings(value)
        if keys is None:
            # A platform's factories build keys from arguments: description_uses reads those.
            if path[0] != "entity":
                unreadable.append(f"{source.where(node)}: cannot tell which translation key")
            return
        uses.extend(Use(tuple(p.format(k) for p in path), source.where(node), given) for k in keys)

    for node in ast.walk(source.tree):
        if isinstance(node, ast.Call) and (value := _keyword(node, "translation_key")):
            if (path := _call_target(node, platform)) is None:
                name = _call_name(node)
                unreadable.append(
                    f"{source.where(node)}: translation_key in {name}() outside a platform"
                )
            else:
                add(node, value, path, _given(node, "translation_placeholders"))
        elif isinstance(node, ast.ClassDef):
            body = list(ast.walk(node))
            keys = [(n, v) for n in body if (v := _assigned(n, "_attr_translation_key"))]
            if keys and platform is None:
                unreadable.append(f"{source.where(node)}: entity {node.name} outside a platform")
                continue
            events = [v for n in body if (v := _assigned(n, "_attr_event_types"))]
            for where, value in keys:
                add(where, value, ("entity", str(platform), "{}", "name"))
                for key in source.strings(value) or set():
                    event_type = ("entity", str(platform), key, "state_attributes", "event_type")
                    for event in events:
                        add(where, event, (*event_type, "state", "{}"))
    return uses, unreadable


def _flow_kind(node: ast.ClassDef) -> str | None:
    bases = {
        base.id if isinstance(base, ast.Name) else getattr(base, "attr", "") for base in node.bases
    }
    if "OptionsFlow" in bases or "OptionsFlowWithReload" in bases:
        return "options"
    return "config" if "ConfigFlow" in bases else None


# Config flow helpers that abort with a reason of the integration's: (keyword, default).
ABORT_HELPERS = {
    "async_abort": ("reason", None),
    "_abort_if_unique_id_configured": ("error", "already_configured"),
    "_async_abort_entries_match": ("", "already_configured"),
    "_abort_if_unique_id_mismatch": ("reason", "unique_id_mismatch"),
    # Without a reason these two use Home Assistant's own strings.
    "async_update_reload_and_abort": ("reason", None),
    "async_update_and_abort": ("reason", None),
}


def _errors_set(node: ast.Assign) -> list[str]:
    """The error keys an assignment puts into ``errors``: ``errors[...] = ...``, ``errors = {}``."""
    found = []
    for target in node.targets:
        if isinstance(target, ast.Subscript) and getattr(target.value, "id", None) == "errors":
            values = [node.value]
        elif isinstance(target, ast.Name) and target.id == "errors":
            dicts = [d for d in ast.walk(node.value) if isinstance(d, ast.Dict)]
            values = [value for d in dicts for value in d.values]
        else:
            continue
        found += [
            v.value for v in values if isinstance(v, ast.Constant) and isinstance(v.value, str)
        ]
    return found


def _abort_reasons(source: Source, call: ast.Call) -> set[str]:
    name = _call_name(call)
    if name == "AbortFlow" and call.args:
        return source.strings(call.args[0]) or set()
    if name not in ABORT_HELPERS:
        return set()
    keyword, default = ABORT_HELPERS[name]
    value = _keyword(call, keyword)
    if value is not None:
        return source.strings(value) or set()
    return {default} if default else set()


def flow_uses(source: Source) -> list[Use]:
    """Errors, aborts, steps and menu options of the flows in a module."""
    uses: list[Use] = []
    for flow in ast.walk(source.tree):
        if not isinstance(flow, ast.ClassDef) or (kind := _flow_kind(flow)) is None:
            continue
        # Methods that take the step id first (after self) show that step.
        step_methods = {
            node.name
            for node in flow.body
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and len(node.args.args) > 1
            and node.args.args[1].arg == "step_id"
        }
        for node in ast.walk(flow):
            where = source.where(node)
            if isinstance(node, ast.Assign):
                uses += [Use((kind, "error", error), where) for error in _errors_set(node)]
            if not isinstance(node, ast.Call):
                continue
            given = _given(node, "description_placeholders")
            uses += [Use((kind, "abort", r), where, given) for r in _abort_reasons(source, node)]
            step = _keyword(node, "step_id")
            if step is None and _call_name(node) in step_methods and node.args:
                step = node.args[0]
            if not isinstance(step, ast.Constant) or not isinstance(step.value, str):
                continue
            uses.append(Use((kind, "step", step.value), where))
            if _call_name(node) == "async_show_menu":
                options = source.strings(_keyword(node, "menu_options")) or set()
                uses += [Use((kind, "step", step.value, "menu_options", o), where) for o in options]
    return uses


def probe_error_uses() -> list[Use]:
    """The config flow shows the error named by any SourceError the probe raises."""
    return [
        Use(("config", "error", cls.error), f"{cls.__module__}.{cls.__name__}")
        for cls in with_subclasses(SourceError)
    ]


def _descriptions(values: Iterable[object]) -> Iterator[EntityDescription]:
    for value in values:
        if isinstance(value, EntityDescription):
            yield value
        elif isinstance(value, Mapping):
            yield from _descriptions(value.values())
        elif isinstance(value, list | tuple | set | frozenset):
            yield from _descriptions(value)


def description_uses(module: ModuleType) -> list[Use]:
    """Names (and enum states) of every entity description a platform module holds."""
    platform = module.__name__.rpartition(".")[2]
    uses = []
    for description in _descriptions(vars(module).values()):
        key = description.translation_key
        if key is None:
            continue
        where = f"{platform}.py: description {description.key}"
        placeholders_given = description.translation_placeholders
        given = frozenset(placeholders_given) if placeholders_given else None
        uses.append(Use(("entity", platform, key, "name"), where, given))
        options = getattr(description, "options", None)
        uses += [Use(("entity", platform, key, "state", str(o)), where) for o in options or ()]
    return uses


def code_problems(text: str, module: str, english: Mapping[str, Any]) -> list[str]:
    """What a module's source asks for that en.json lacks, or that cannot be read."""
    source = Source(text, module)
    uses, unreadable = translation_key_uses(source)
    return unreadable + missing([*uses, *flow_uses(source)], english)


def test_code_uses_only_english_keys() -> None:
    english = load("en")
    problems = []
    for path in sorted(PACKAGE.glob("*.py")):
        problems += code_problems(path.read_text(encoding="utf-8"), path.stem, english)
    problems += missing(probe_error_uses(), english)
    for module in PLATFORM_MODULES:
        problems += missing(description_uses(module), english)
    assert problems == []


def test_the_reading_sees_what_the_code_uses() -> None:
    """The scan finds the keys this integration is known to use: it reads the real code."""
    source = Source((PACKAGE / "config_flow.py").read_text(encoding="utf-8"), "config_flow")
    found = {".".join(use.path) for use in flow_uses(source)}
    assert {
        "config.error.invalid_key_format",
        "config.abort.wrong_meter",
        "config.abort.already_configured",
        "config.step.key",
        "config.step.reauth_confirm",
        "config.step.user.menu_options.network",
        "options.step.init",
    } <= found
    sensor = next(module for module in PLATFORM_MODULES if module.__name__.endswith(".sensor"))
    entity = {".".join(use.path) for use in description_uses(sensor)}
    assert {
        "entity.sensor.energy_import.name",
        "entity.sensor.current_limit_export.name",
        "entity.sensor.breaker_state.state.ready_for_reconnection",
        "entity.sensor.last_telegram.name",
    } <= entity
    assert "config.error.no_data" in {".".join(use.path) for use in probe_error_uses()}
    # ConfigEntryNotReady(translation_key=err.error) for each CannotConnect the source raises.
    source = Source((PACKAGE / "coordinator.py").read_text(encoding="utf-8"), "coordinator")
    exceptions = {".".join(use.path) for use in translation_key_uses(source)[0]}
    assert {"exceptions.cannot_connect.message", "exceptions.mqtt_not_setup.message"} <= exceptions


def test_schema_fields_have_labels() -> None:
    """Every field of the config flow's schemas has a label in some step."""
    steps = {**load("en")["config"]["step"], **load("en")["options"]["step"]}
    labels = {field for step in steps.values() for field in step.get("data", {})}
    schemas = [value for value in vars(config_flow).values() if isinstance(value, vol.Schema)]
    assert schemas
    fields = {str(key) for schema in schemas for key in schema.schema}
    assert fields - labels == set()
    for name, step in steps.items():
        assert set(step.get("data_description", {})) <= set(step.get("data", {})), name


# Code that asks for strings en.json lacks: each must be reported.
UNTRANSLATED = [
    pytest.param(
        "coordinator",
        "raise ConfigEntryNotReady(translation_domain=DOMAIN, translation_key='gone')",
        ["exceptions.gone.message is not in en.json"],
        id="exception",
    ),
    pytest.param(
        "coordinator",
        "raise HomeAssistantError(translation_domain=DOMAIN, translation_key='cannot_connect',"
        " translation_placeholders={'host': host})",
        ["exceptions.cannot_connect.message needs ['endpoint'], not given"],
        id="exception-placeholder",
    ),
    pytest.param(
        "entity",
        "KEYS = {3: 'mbus_gas', 9: 'mbus_oil'}\n"
        "def f(kind):\n    return DeviceInfo(translation_key=KEYS.get(kind, 'mbus'))",
        ["device.mbus_oil.name is not in en.json"],
        id="device-table",
    ),
    pytest.param(
        "entity",
        "def f(key):\n    return DeviceInfo(translation_key=key)",
        ["cannot tell which translation key"],
        id="device-unreadable",
    ),
    pytest.param(
        "sensor",
        "FREQ = SensorEntityDescription(key='f', translation_key='frequency')",
        ["entity.sensor.frequency.name is not in en.json"],
        id="entity",
    ),
    pytest.param(
        "config_flow",
        "class F(ConfigFlow, domain='x'):\n"
        "    async def async_step_user(self, user_input=None):\n"
        "        errors['base'] = 'no_such_error'\n"
        "        errors = {'base': 'gone_too'} if x else {}\n"
        "        self._abort_if_unique_id_mismatch()\n"
        "        return self.async_abort(reason='wrong_meter', description_placeholders={'s': s})\n"
        "    async def step(self, step_id, user_input):\n"
        "        return self.async_show_menu(step_id='pick', menu_options=['a'])\n"
        "    async def other(self):\n"
        "        return await self.step('nowhere', None)\n"
        "class O(OptionsFlow):\n"
        "    async def async_step_init(self, user_input=None):\n"
        "        return self.async_show_form(step_id='user')",
        [
            "config.error.no_such_error is not in en.json",
            "config.error.gone_too is not in en.json",
            "config.abort.unique_id_mismatch is not in en.json",
            "config.abort.wrong_meter needs ['serial'], not given",
            "config.step.pick is not in en.json",
            "config.step.pick.menu_options.a is not in en.json",
            "config.step.nowhere is not in en.json",
            "options.step.user is not in en.json",
        ],
        id="flow",
    ),
]


@pytest.mark.parametrize(("module", "code", "expected"), UNTRANSLATED)
def test_untranslated_keys_are_reported(module: str, code: str, expected: list[str]) -> None:
    problems = code_problems(code, module, load("en"))
    assert sorted(problem.partition(": ")[2] for problem in problems) == sorted(expected)
