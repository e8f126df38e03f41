"""`json.marshal`, `json.marshal_with_options` and `yaml.unmarshal` as OPA answers them.

OPA marshals with Go's encoding/json: object keys sorted, `<`, `>` and `&` escaped as
`\\u003c`..., U+2028/U+2029 escaped, a number written as the text OPA holds; regorus writes
`<>&` as they are and numbers in Rust's notation (`1e+100` where OPA keeps `1e100`). OPA reads
YAML as YAML 1.1 (sigs.k8s.io/yaml): `yes`, `on` are booleans; regorus reads `yes` as a string.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from mlflow_ztml.policy.compat.values import number_text, sorted_values, type_name


def _go_string(text: str) -> str:
    out = ['"']
    for char in text:
        code = ord(char)
        if char == '"':
            out.append('\\"')
        elif char == "\\":
            out.append("\\\\")
        elif char == "\n":
            out.append("\\n")
        elif char == "\r":
            out.append("\\r")
        elif char == "\t":
            out.append("\\t")
        elif char == "\b":
            out.append("\\b")
        elif char == "\f":
            out.append("\\f")
        elif code < 0x20 or char in "<>&" or code in (0x2028, 0x2029):
            out.append(f"\\u{code:04x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def _encode(value: Any, indent: str, prefix: str, level: int) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return number_text(value)
    if isinstance(value, str):
        return _go_string(value)
    if isinstance(value, set | frozenset):
        value = sorted_values(value)
    newline = "\n" + prefix + indent * (level + 1) if indent or prefix else ""
    closing = "\n" + prefix + indent * level if indent or prefix else ""
    separator = ": " if indent or prefix else ":"
    if isinstance(value, list):
        if not value:
            return "[]"
        items = [_encode(item, indent, prefix, level + 1) for item in value]
        return "[" + ",".join(newline + item for item in items) + closing + "]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        keys = sorted(value, key=lambda key: _key_text(key).encode("utf-8"))
        items = [
            _go_string(_key_text(key)) + separator + _encode(value[key], indent, prefix, level + 1)
            for key in keys
        ]
        return "{" + ",".join(newline + item for item in items) + closing + "}"
    raise ValueError(f"json.marshal: cannot marshal {type_name(value)}")


def _key_text(key: Any) -> str:
    if isinstance(key, str):
        return key
    # OPA turns non-string keys into their JSON text.
    return _encode(key, "", "", 0)


def json_marshal(value: Any) -> str:
    return _encode(value, "", "", 0)


def json_marshal_with_options(value: Any, options: Any) -> str:
    name = "json.marshal_with_options"
    if not isinstance(options, dict):
        raise ValueError(f"{name}: operand 2 must be object but got {type_name(options)}")
    pretty = options.get("pretty")
    indent = options.get("indent", "\t")
    prefix = options.get("prefix", "")
    for key in options:
        if key not in ("pretty", "indent", "prefix"):
            raise ValueError(f'{name}: object operand had unexpected key "{key}"')
    if pretty is not None and not isinstance(pretty, bool):
        raise ValueError(f"{name}: pretty must be a boolean")
    if not isinstance(indent, str) or not isinstance(prefix, str):
        raise ValueError(f"{name}: indent and prefix must be strings")
    if pretty is False or (pretty is None and "indent" not in options and "prefix" not in options):
        return json_marshal(value)
    return prefix + _encode(value, indent, prefix, 0)


class _Yaml11Loader(yaml.SafeLoader):
    """YAML 1.1 like go-yaml v2 into JSON: timestamps stay strings."""


_Yaml11Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _to_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {_yaml_key(key): _to_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_to_json(item) for item in value]
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        raise ValueError("yaml.unmarshal: json: unsupported value")
    if isinstance(value, bytes):
        raise ValueError("yaml.unmarshal: binary values are not supported")
    return value


def _yaml_key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, bool):
        return "true" if key else "false"
    if key is None:
        return "null"
    return json.dumps(key)


def yaml_unmarshal(text: Any) -> Any:
    if not isinstance(text, str):
        raise ValueError(f"yaml.unmarshal: operand 1 must be string but got {type_name(text)}")
    try:
        document = yaml.load(text, Loader=_Yaml11Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ValueError(f"yaml.unmarshal: {exc}") from None
    return _to_json(document)
