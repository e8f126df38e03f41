"""`json.remove`, `json.filter` and `json.patch` as OPA (topdown/json.go) implements them.

The divergence that started this module: OPA reads a string path as a JSON pointer, trimming
every leading `/` and unescaping `~1` and `~0`, so `json.remove(x, ["/spec/a"])` removes
`spec.a`; regorus splits the string on `/` as it is, so the leading `/` makes an empty first
segment and nothing is removed. json.patch differs too: OPA fails on an operation that cannot
apply (removing a missing key, a failed `test`, an unknown op) where regorus is undefined.
"""

from __future__ import annotations

import copy
from typing import Any

from mlflow_ztml.policy.compat.values import type_name

_LEAF = object()  # a path ends here (OPA marks it with null in its filter object)


class JsonPathError(ValueError):
    """An operation OPA refuses (reported as a builtin error)."""


def parse_path(path: Any, name: str) -> list[Any]:
    """OPA's parsePath: a JSON pointer string, or an array of segments."""
    if isinstance(path, str):
        if path == "":
            return []
        parts = path.lstrip("/").split("/")
        return [part.replace("~1", "/").replace("~0", "~") for part in parts]
    if isinstance(path, list):
        return list(path)
    raise JsonPathError(
        f"{name}: operand 2 must be one of {{set, array}} containing string paths or array of "
        f"path segments but got {type_name(path)}"
    )


def _paths(operand: Any, name: str) -> list[list[Any]]:
    if isinstance(operand, list | set | frozenset):
        return [parse_path(path, name) for path in operand]
    raise JsonPathError(
        f"{name}: operand 2 must be one of {{set, array}} but got {type_name(operand)}"
    )


def _key(segment: Any) -> Any:
    # Python dict keys: make a list segment hashable the way OPA compares terms.
    return tuple(segment) if isinstance(segment, list) else segment


def _paths_to_tree(paths: list[list[Any]]) -> dict[Any, Any]:
    """OPA's pathsToObject: a trie whose leaves mark what to remove or keep."""
    root: dict[Any, Any] = {}
    for path in paths:
        if not path:
            continue
        node = root
        done = False
        for segment in path[:-1]:
            child = node.get(_key(segment))
            if child is None:
                child = {}
                node[_key(segment)] = child
            elif child is _LEAF:
                done = True
                break
            node = child
        if not done:
            node[_key(path[-1])] = _LEAF
    return root


def _lookup(tree: dict[Any, Any], key: Any) -> Any:
    try:
        return tree.get(_key(key))
    except TypeError:  # an unhashable element (an object inside a set) matches no path
        return None


def json_remove(document: Any, paths: Any) -> Any:
    if not isinstance(document, dict):
        raise JsonPathError(f"json.remove: operand 1 must be object but got {type_name(document)}")
    tree = _paths_to_tree(_paths(paths, "json.remove"))
    return _remove(document, tree)


def _remove(value: Any, tree: Any) -> Any:
    if tree is None or not isinstance(tree, dict):
        return value if tree is not _LEAF else _LEAF
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            kept = _remove(item, _lookup(tree, key))
            if kept is not _LEAF:
                out[key] = kept
        return out
    if isinstance(value, set | frozenset):
        out_set = set()
        for item in value:
            kept = _remove(item, _lookup(tree, item))
            if kept is not _LEAF:
                out_set.add(kept)
        return out_set
    if isinstance(value, list):
        out_list = []
        for index, item in enumerate(value):
            kept = _remove(item, tree.get(str(index)))
            if kept is not _LEAF:
                out_list.append(kept)
        return out_list
    return value


def json_filter(document: Any, paths: Any) -> Any:
    if not isinstance(document, dict):
        raise JsonPathError(f"json.filter: operand 1 must be object but got {type_name(document)}")
    tree = _paths_to_tree(_paths(paths, "json.filter"))
    return _filter(document, tree)


def _filter(value: Any, tree: Any) -> Any:
    if tree is _LEAF:
        return value
    if isinstance(value, dict):
        return {
            key: _filter(item, _lookup(tree, key))
            for key, item in value.items()
            if _lookup(tree, key) is not None
        }
    if isinstance(value, set | frozenset):
        return {
            _filter(item, _lookup(tree, item)) for item in value if _lookup(tree, item) is not None
        }
    if isinstance(value, list):
        return [_filter(item, tree[str(i)]) for i, item in enumerate(value) if str(i) in tree]
    return value


# -- json.patch (OPA's edittree semantics, errors where OPA errors) --------------------------


def json_patch(document: Any, operations: Any) -> Any:
    if not isinstance(operations, list):
        raise JsonPathError(f"json.patch: operand 2 must be array but got {type_name(operations)}")
    target = copy.deepcopy(document)
    for operation in operations:
        if not isinstance(operation, dict):
            raise JsonPathError(
                "json.patch: must be an array of JSON-Patch objects, but at least one element "
                "is not an object"
            )
        target = _apply(target, operation)
    return target


def _attribute(operation: dict[str, Any], name: str) -> Any:
    if name not in operation:
        raise JsonPathError(f"json.patch: missing '{name}' attribute")
    return operation[name]


def _apply(target: Any, operation: dict[str, Any]) -> Any:
    op = _attribute(operation, "op")
    if not isinstance(op, str):
        raise JsonPathError("json.patch: attribute 'op' must be a string")
    if op not in ("add", "remove", "replace", "move", "copy", "test"):
        raise JsonPathError(f"json.patch: unrecognized op '{op}'")
    path = parse_path(_attribute(operation, "path"), "json.patch")
    if op in ("move", "copy"):
        source = parse_path(_attribute(operation, "from"), "json.patch")
    if op in ("add", "replace", "test"):
        value = copy.deepcopy(_attribute(operation, "value"))
    if op == "add":
        return _insert(target, path, value)
    if op == "remove":
        return _delete(target, path)
    if op == "replace":
        if not path:  # OPA replaces the whole document (though it refuses to remove it)
            return value
        return _insert(_delete(target, path), path, value)
    if op == "move":
        chunk = _render(target, source)
        return _insert(_delete(target, source), path, chunk)
    if op == "copy":
        return _insert(target, path, copy.deepcopy(_render(target, source)))
    found = _render(target, path)
    if found != value or (type(found) is bool and type(value) is not bool):
        raise JsonPathError("json.patch: value from EditTree != patch value.")
    return target


def _index(array: list[Any], segment: Any, *, insert: bool) -> int:
    if insert and segment == "-":
        return len(array)
    if isinstance(segment, str):
        if not segment.isdigit() or (len(segment) > 1 and segment.startswith("0")):
            raise JsonPathError(f"json.patch: invalid array index {segment!r}")
        index = int(segment)
    elif isinstance(segment, int) and not isinstance(segment, bool):
        index = segment
    else:
        raise JsonPathError(f"json.patch: invalid array index {segment!r}")
    limit = len(array) if insert else len(array) - 1
    if index < 0 or index > limit:
        raise JsonPathError(f"json.patch: index {index} out of range")
    return index


def _insert(target: Any, path: list[Any], value: Any) -> Any:
    if not path:
        return value
    parent = _render(target, path[:-1])
    last = path[-1]
    if isinstance(parent, dict):
        parent[_key(last)] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, insert=True), value)
    elif isinstance(parent, set):
        if _key(last) != _key(value):
            raise JsonPathError(
                f"json.patch: set key {last!r} does not equal value to be inserted {value!r}"
            )
        parent.add(value)
    else:
        raise JsonPathError(f"json.patch: cannot insert into a {type_name(parent)}")
    return target


def _delete(target: Any, path: list[Any]) -> Any:
    if not path:
        raise JsonPathError("json.patch: cannot delete the document root")
    parent = _render(target, path[:-1])
    last = path[-1]
    if isinstance(parent, dict):
        if _key(last) not in parent:
            raise JsonPathError(f"json.patch: cannot delete child key {last!r} that does not exist")
        del parent[_key(last)]
    elif isinstance(parent, list):
        del parent[_index(parent, last, insert=False)]
    elif isinstance(parent, set):
        if _key(last) not in parent:
            raise JsonPathError(
                f"json.patch: cannot delete set member {last!r} that does not exist"
            )
        parent.discard(_key(last))
    else:
        kind = type_name(parent)
        raise JsonPathError(f"json.patch: cannot remove a member of a {kind}")
    return target


def _render(target: Any, path: list[Any]) -> Any:
    node = target
    for segment in path:
        if isinstance(node, dict):
            if _key(segment) not in node:
                raise JsonPathError(f"json.patch: path {path!r} does not exist")
            node = node[_key(segment)]
        elif isinstance(node, list):
            node = node[_index(node, segment, insert=False)]
        elif isinstance(node, set):
            if _key(segment) not in node:
                raise JsonPathError(f"json.patch: path {path!r} does not exist")
            node = _key(segment)
        else:
            raise JsonPathError(f"json.patch: path {path!r} does not exist")
    return node
