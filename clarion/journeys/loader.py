"""Reading journey files: YAML (duplicate keys refused), validation errors with field paths."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from clarion.errors import ClarionError
from clarion.journeys.definition import JourneyDefinition


class JourneyError(ClarionError):
    """A journey file that cannot be published; the message names the file and the field."""


class _UniqueKeyLoader(yaml.SafeLoader):
    pass


def _mapping(
    loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False
) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def describe_errors(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
        msg = str(err["msg"]).removeprefix("Value error, ")
        shown = err.get("input")
        suffix = "" if isinstance(shown, (dict, list)) or shown is None else f" (got {shown!r})"
        parts.append(f"{loc or '(top)'}: {msg}{suffix}")
    return "; ".join(parts)


def parse_journey(raw: Any, *, where: str, default_name: str | None = None) -> JourneyDefinition:
    if not isinstance(raw, dict):
        raise JourneyError(f"{where}: expected a mapping at the top level")
    if default_name and "name" not in raw:
        raw = {"name": default_name, **raw}
    try:
        return JourneyDefinition.model_validate(raw)
    except ValidationError as exc:
        raise JourneyError(f"{where}: {describe_errors(exc)}") from exc


def load_journey_file(path: Path) -> JourneyDefinition:
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        raise JourneyError(f"{path}: not valid YAML: {exc}") from exc
    return parse_journey(raw, where=str(path), default_name=path.stem)


def load_journey_files(directory: Path) -> list[tuple[Path, JourneyDefinition]]:
    """Every ``*.yaml`` / ``*.yml`` journey in ``directory`` with the file it came from."""
    if not directory.is_dir():
        raise JourneyError(f"{directory}: not a directory")
    files = sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")])
    if not files:
        raise JourneyError(f"{directory}: no journey files (*.yaml)")
    loaded = [(f, load_journey_file(f)) for f in files]
    names: dict[str, Path] = {}
    for f, j in loaded:
        if j.name in names:
            raise JourneyError(f"{f}: journey name {j.name!r} is also used by {names[j.name]}")
        names[j.name] = f
    return loaded


def load_journey_dir(directory: Path) -> list[JourneyDefinition]:
    return [definition for _, definition in load_journey_files(directory)]


def json_schema() -> str:
    """The JSON Schema of journey files, for editors."""
    schema = JourneyDefinition.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Clarion journey"
    return json.dumps(schema, indent=2) + "\n"
