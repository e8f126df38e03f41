"""ztml's in-process engine (regorus + the compat layer) decides exactly what OPA decides.

Both engines run here, in-process: regorus through ztml's RegorusEngine (the default gate
engine) and OPA's own Go engine (opa-golib-python-bindings, installed by the Makefile so CI
always has it). They get:
- a corpus of probe policies, one per divergence class found between regorus 0.13 and OPA
  (docs/rego-divergences.md), each with inputs chosen at the edges where the two disagreed;
- ztml's own policies, on the representative manifests of tests/policy/manifests.py, in every
  built-in environment, and on malformed inputs;
and every outcome (a value, undefined, or an error) must be the same. Decisions are compared
engine against engine, never against hard-coded messages (the policies change).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from mlflow_ztml import gate
from mlflow_ztml.errors import PolicyError
from mlflow_ztml.policy.bundle import PolicyBundle
from mlflow_ztml.policy.engine import decision_from_document
from mlflow_ztml.policy.regorus import RegorusEngine
from tests.policy.manifests import CASES, good_document

opa_bindings = pytest.importorskip(
    "opa_bindings",
    reason="OPA's engine is not installed "
    "(pip install --no-deps --ignore-requires-python opa-golib-python-bindings==0.4.4)",
    exc_type=ImportError,
)

MODULE = "conformance.rego"
QUERY_PACKAGE = "conformance"

# Each probe: a module defining data.conformance.result, and inputs for it. The module
# reads its arguments from `input`, so OPA's compile-time type checker sees no constants.
PROBES: dict[str, tuple[str, list[dict[str, Any]]]] = {
    "json_remove_paths": (
        "result := json.remove(input.doc, input.paths)",
        [
            {"doc": {"spec": {"a": 1, "b": 2}, "c": [1, 2]}, "paths": [p]}
            for p in (
                "/spec/a",
                "spec/a",
                "//spec/a",
                "/spec/a/",
                "/c/0",
                "/spec",
                "",
                ["spec", "a"],
                "/x~1y",
                "/nothing/here",
            )
        ]
        + [{"doc": {"x/y": 1, "~": 2}, "paths": ["/x~1y", "/~0"]}],
    ),
    "json_filter_paths": (
        "result := json.filter(input.doc, input.paths)",
        [
            {"doc": {"spec": {"a": 1, "b": 2}, "c": [1, 2, 3]}, "paths": p}
            for p in (["/spec/a"], ["spec/a"], ["/c/1"], ["c/1", "/spec"], [""], [])
        ],
    ),
    "json_patch_ops": (
        "result := json.patch(input.doc, input.ops)",
        [
            {"doc": {"a": {"b": 1}, "d": [1, 2]}, "ops": [op]}
            for op in (
                {"op": "add", "path": "/a/c", "value": 2},
                {"op": "add", "path": "a/c", "value": 2},
                {"op": "add", "path": "/d/-", "value": 3},
                {"op": "remove", "path": "/a/b"},
                {"op": "remove", "path": "/a/missing"},
                {"op": "replace", "path": "", "value": 9},
                {"op": "test", "path": "/a/b", "value": 2},
                {"op": "move", "from": "/a/b", "path": "/e"},
                {"op": "copy", "from": "/d", "path": "/f"},
                {"op": "bogus", "path": "/a"},
            )
        ],
    ),
    "objects": (
        "result := [object.remove(input.o, input.k), object.filter(input.o, input.k), "
        'object.union(input.o, {"a": {"z": 1}}), object.get(input.o, input.k, "none")]',
        [{"o": {"a": {"b": 1}, "c": 2}, "k": k} for k in (["a"], ["c", "x"], [])],
    ),
    "glob": (
        "result := glob.match(input.p, input.d, input.s)",
        [
            {"p": p, "d": d, "s": s}
            for p, d, s in (
                ("*.github.com", [], "api.github.com"),
                ("*.github.com", [], "api.cdn.github.com"),
                ("*.github.com", None, "api.cdn.github.com"),
                ("a**", [], "a.b.c"),
                ("a/**", ["/"], "a/b/c"),
                ("a[!b]d", [], "acd"),
                ("a[^b]d", [], "acd"),
                ("a[.]b", ["."], "a.b"),
                ("{a,b}.c", [], "b.c"),
                ("a?c", [], "a.c"),
            )
        ],
    ),
    "glob_quote_meta": (
        "result := glob.quote_meta(input.p)",
        [{"p": "*.github.com?[x]{a}"}, {"p": "plain"}],
    ),
    "regex_go_syntax": (
        "result := [regex.match(input.p, input.s), regex.find_n(input.p, input.s, -1), "
        'regex.replace(input.s, input.p, "<$0>")]',
        [
            {"p": p, "s": s}
            for p, s in (
                (r"^\d$", "\u0663"),
                (r"^\w+$", "caf\u00e9"),
                (r"^\s$", "\u00a0"),
                (r"\bx", "\u00e9x"),
                (r"\Q.*\E", "a.*b"),
                (r"a{,2}", "a{,2}"),
                (r"x\<y", "x<y"),
                (r"(?i)STRASSE", "strasse"),
                (r"^\d+\.\d+\.\d+$", "1.2.3"),
            )
        ],
    ),
    "regex_split_and_validity": (
        "result := [regex.split(input.p, input.s), regex.is_valid(input.p)]",
        [
            {"p": p, "s": s}
            for p, s in (("", "abc"), (",", "a,b,"), ("x*", "axb"), ("[<>=!~]+", "torch>=2"))
        ],
    ),
    "regex_invalid_in_go": (
        "result := regex.is_valid(input.p)",
        [{"p": p} for p in ("a**", "a*+", r"\8", "(?x)a", "a{1001}", "[z-a]", "(?P<n>a)")],
    ),
    "arithmetic": (
        "result := [input.a + input.b, input.a - input.b, input.a * input.b, "
        "input.a / input.b, input.a - input.b > input.c, input.a + input.b == input.c]",
        [
            {"a": a, "b": b, "c": c}
            for a, b, c in (
                (0.1, 0.2, 0.3),
                (0.32, 0.02, 0.3),
                (0.94, 0.02, 0.92),
                (1.1, 1.1, 1.21),
                (1, 3, 0.3333333333333333),
                (7, 2, 3.5),
                (100, 1.5, 150),
                (9007199254740993, 1, 9007199254740994),
            )
        ],
    ),
    "remainder_and_aggregates": (
        "result := [input.a % input.b, sum(input.xs), product(input.xs), max(input.xs)]",
        [
            {"a": a, "b": b, "xs": xs}
            for a, b, xs in (
                (7, 3, [0.1, 0.2]),
                (-7, 3, [1.1, 1.1]),
                (7, -3, [0.3333333333333333, 1.5]),
            )
        ],
    ),
    "float_remainder_is_an_error": ("result := input.a % input.b", [{"a": 7.5, "b": 2}]),
    "sprintf": (
        "result := sprintf(input.f, input.args)",
        [
            {"f": f, "args": args}
            for f, args in (
                ("%.2f", [0.855]),
                ("%.2f", [1]),
                ("%.0f", [2.5]),
                ("%d", [3.5]),
                ("%s %s", [1, 1.5]),
                ("%v", [{"b": 1, "a": [True, None]}]),
                ("%v", [1e-07]),
                ("%v %v", [1234567.5, 0.1]),
                ("%5d|%-5d|%05d", [42, 42, 42]),
                ("[%10s]", ["\u00e9"]),
                ("%s %s", ["x"]),
                ("%s", ["x", "y"]),
                ("%x %X %o %b %c %q %U", [255, 255, 8, 5, 65, 66, 67]),
                ("%e %g %G %v", [1234.5678, 0.00001, 2.5e-07, 1.5e15]),
                ("%q %x", ['a"b', "hi"]),
                ("%d", [12345678901234567890]),
                ("%T %T %T", [1, 1.5, "s"]),
                ("%[2]v %[1]v", ["a", "b"]),
            )
        ],
    ),
    "sets_and_ordering": (
        "result := [sort(input.xs), {x | some x in input.xs}, {x | some x in input.xs} - "
        '{3, "a"}, sprintf("%v %v", [{x | some x in input.ys}, {x | some x in []}])]',
        [
            {"xs": [3, "a", None, True, [1], {"a": 1}, 1.5, False], "ys": [3, "a", 1.5, None]},
            {"xs": [], "ys": []},
        ],
    ),
    "every": (
        "result if { every x in input.xs { x > 1 } }",
        [{"xs": []}, {"xs": [2, 3]}, {"xs": [1, 2]}, {"xs": {"a": 2}}, {}],
    ),
    "strings": (
        "result := [upper(input.s), lower(input.s), trim(input.s, input.c), split(input.s, "
        "input.c), substring(input.s, 1, 2), indexof(input.s, input.c), "
        "strings.count(input.s, input.c), strings.replace_n(input.m, input.s), "
        "concat(input.c, {x | some x in [input.s, input.c]}), format_int(input.n, 16)]",
        [
            {"s": s, "c": c, "m": {"a": "b", "b": "c"}, "n": n}
            for s, c, n in (
                ("stra\u00dfe", "e", 255),
                ("\u0130stanbul", "\u0130", -16),
                ("\u0391\u03a3", "\u03a3", 3.9),
                ("\ufb01ab", "a", 0),
                ("ab", "", 1),
            )
        ],
    ),
    "units": (
        "result := [units.parse(input.s), units.parse_bytes(input.s)]",
        [{"s": s} for s in ("500m", "1.5Gi", "0.5", "1.9", "2.5K", "1KiB", "1e3", "10M", "x")],
    ),
    "semver": (
        "result := [semver.is_valid(input.a), semver.compare(input.a, input.b)]",
        [
            {"a": a, "b": b}
            for a, b in (
                ("1.0.0", "1.0.1"),
                ("v1.0.0", "1.0.0"),
                ("01.0.0", "1.0.0"),
                ("1.0.0-alpha", "1.0.0"),
                ("1.0.0-rc.10", "1.0.0-rc.9"),
                ("1.0", "1.0.0"),
                (1, "1.0.0"),
            )
        ],
    ),
    "time": (
        "result := [time.parse_rfc3339_ns(input.t), time.parse_duration_ns(input.d)]",
        [
            {"t": t, "d": d}
            for t, d in (
                ("2024-01-02T03:04:05Z", "1h30m"),
                ("2024-01-02T03:04:05.123456789+02:00", "1d"),
                ("2024-01-02t03:04:05z", "1w"),
                ("2024-01-02 03:04:05Z", "1y"),
                ("2024-06-30T23:59:60Z", "1.5h"),
                ("2024-01-02T03:04:05,5Z", "-2m"),
                ("2024-01-02T03:04:05+24:00", "1x"),
            )
        ],
    ),
    "arrays": (
        "result := [array.slice(input.a, input.i, input.j), array.flatten([input.a, [input.a]])]",
        [{"a": [1, 2, 3], "i": i, "j": j} for i, j in ((1, 2), (-1, 10), (2, 1), (1.5, 2))],
    ),
    "cross_type_comparison": (
        "result := [input.a < input.b, input.a == input.b, max([input.a, input.b])]",
        [
            {"a": a, "b": b}
            for a, b in ((1, "a"), ("a", [1]), ([1], {"a": 1}), (None, False), (1, 1.0), ([], {}))
        ],
    ),
    "undefined_and_errors": (
        "result := [to_number(input.s), json.is_valid(input.s), count(input.s)]",
        [{"s": s} for s in ("1.5", "abc", "")] + [{}],
    ),
    "encodings": (
        "result := [json.marshal(input.v), json.marshal_with_options(input.v, "
        '{"pretty": true}), yaml.unmarshal(input.y), crypto.sha256(input.y), '
        'crypto.hmac.sha256(input.y, "k")]',
        [
            {"v": {"b": "<&>", "a": [1, 2.5, None]}, "y": "a: yes\nb: [x, 2.5]\nc: 0x10"},
            {"v": "\u2028", "y": "- on\n- 010"},
        ],
    ),
    "operator_functions": (
        "result := [plus(input.a, input.b), minus(input.a, input.b), mul(input.a, input.b), "
        "div(input.a, input.b), lt(input.a, input.b), equal(input.a, input.b)]",
        [{"a": 0.1, "b": 0.2}, {"a": 7, "b": 2}],
    ),
}


def _normalise(value: Any) -> Any:
    """A JSON value with integral floats as ints (1.0 and 1 are the same Rego number)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_normalise(item) for item in value]
    if isinstance(value, dict):
        return {key: _normalise(item) for key, item in value.items()}
    return value


def _outcome_regorus(engine: RegorusEngine, query: str, input: dict[str, Any]) -> tuple:
    try:
        wrapped = engine.evaluate(f"[{query}]", input)  # [x]: undefined vs null
    except PolicyError:
        return ("error",)
    if wrapped is None:
        return ("undefined",)
    return ("value", json.dumps(_normalise(wrapped[0]), sort_keys=True))


def _outcome_opa(engine: Any, path: str, input: dict[str, Any]) -> tuple:
    try:
        value = engine.eval_document(path, input)
    except opa_bindings.OpaUndefinedError:
        return ("undefined",)
    except opa_bindings.OpaError:
        return ("error",)
    return ("value", json.dumps(_normalise(value), sort_keys=True))


def _probe_source(body: str) -> str:
    return f"package {QUERY_PACKAGE}\n\nimport rego.v1\n\n{body}\n"


@pytest.mark.parametrize("probe", sorted(PROBES))
def test_probe_policies_decide_like_opa(probe: str) -> None:
    body, inputs = PROBES[probe]
    source = _probe_source(body)
    ours = RegorusEngine({MODULE: source}, {})
    opa = opa_bindings.OpaEngine()
    try:
        opa.add_policy(MODULE, source)
        differences = []
        for input in inputs:
            expected = _outcome_opa(opa, f"{QUERY_PACKAGE}.result", input)
            actual = _outcome_regorus(ours, f"data.{QUERY_PACKAGE}.result", input)
            if actual != expected:
                differences.append(f"input {input!r}: OPA {expected}, ztml {actual}")
    finally:
        opa.close()
    assert not differences, "\n".join(differences)


def test_every_divergence_class_of_the_docs_has_a_probe() -> None:
    """The classes the issue names are all exercised (a reminder when adding one)."""
    named = {
        "json_remove_paths", "json_patch_ops", "objects", "glob", "regex_go_syntax",
        "arithmetic", "sets_and_ordering", "every", "strings", "sprintf", "units", "semver",
        "time", "arrays", "cross_type_comparison", "undefined_and_errors",
    }  # fmt: skip
    assert named <= set(PROBES)


# -- constructs ztml refuses instead of answering differently --------------------------------

REFUSED = {
    "strings.render_template": 'result := strings.render_template("{{.a}}", {"a": 1})',
    "regex.globs_match": 'result := regex.globs_match("a.+", "a.*")',
    "number 123456789012345678901": "result := 123456789012345678901 > input.x",
    "number 0.1000000000000000001": "result := 0.1000000000000000001 > input.x",
    "unary minus": "result := -input.x + 1",
}


@pytest.mark.parametrize("construct", sorted(REFUSED))
def test_refused_constructs_name_the_file_line_and_construct(construct: str) -> None:
    source = _probe_source(REFUSED[construct])
    decision = RegorusEngine({MODULE: source}, {}).decide(QUERY_PACKAGE, {"x": 1})
    assert not decision.allow
    assert f"{MODULE}:5: {construct}" in (decision.error or "")


def test_an_integer_beyond_64_bits_in_the_input_is_refused() -> None:
    source = _probe_source("default allow := true\ndeny contains 1 if input.n > 1")
    decision = RegorusEngine({MODULE: source}, {}).decide(QUERY_PACKAGE, {"n": 2**70})
    assert not decision.allow
    assert "input.n" in (decision.error or "") and "64 bits" in (decision.error or "")


# -- ztml's own policies -----------------------------------------------------------------------

ENVIRONMENTS = ("local", "staging", "production")

ODD_INPUTS: list[dict[str, Any]] = [
    {},
    {"environment": "production"},
    {"environment": 7, "manifest": good_document()},
    {"environment": "production", "manifest": {}},
    {"environment": "production", "manifest": {"spec": {}}},
    {"environment": "staging", "manifest": {"spec": {"model": {}}}},
    {"environment": "local", "manifest": {"spec": {"model": {"uri": "http://x"}, "metrics": {}}}},
    {
        "environment": "production",
        "manifest": {
            "spec": {
                "model": {"framework": "sklearn", "uri": "models:/m/1"},
                "metrics": {"accuracy": 1, "f1_score": 0},
                "fairness": {},
                "drift": {"a": 1},
                "dependencies": [{"name": "numpy"}],
                "data_sources": [{}],
                "serving": {"version": "1", "metrics": {"accuracy": 2}},
            }
        },
    },
]


@pytest.fixture(scope="module")
def opa_engine(default_bundle: PolicyBundle) -> Any:
    engine = opa_bindings.OpaEngine()
    for module_id, source in default_bundle.modules.items():
        engine.add_policy(module_id, source)
    engine.add_data(default_bundle.data)
    yield engine
    engine.close()


def _opa_decision(opa_engine: Any, input: dict[str, Any]) -> tuple[bool, list[str], list[str]]:
    try:
        document = opa_engine.eval_document(gate.GOVERNANCE_PACKAGE, input)
    except opa_bindings.OpaUndefinedError:
        document = None
    except opa_bindings.OpaError as exc:
        return False, [f"error: {exc}"], []
    decision = decision_from_document(document, engine="opa", package=gate.GOVERNANCE_PACKAGE)
    return decision.allow, decision.deny, decision.warn


@pytest.mark.parametrize("case", sorted(CASES))
def test_governance_decisions_match_opa(
    case: str, opa_engine: Any, regorus_engine: RegorusEngine
) -> None:
    document = CASES[case][0]
    for environment in ENVIRONMENTS:
        envelope = gate.policy_input(document, environment)
        ours = regorus_engine.decide(gate.GOVERNANCE_PACKAGE, envelope)
        assert _opa_decision(opa_engine, envelope) == (ours.allow, ours.deny, ours.warn), (
            f"{case} in {environment}"
        )


@pytest.mark.parametrize("index", range(len(ODD_INPUTS)))
def test_odd_inputs_are_decided_like_opa(
    index: int, opa_engine: Any, regorus_engine: RegorusEngine
) -> None:
    envelope = ODD_INPUTS[index]
    ours = regorus_engine.decide(gate.GOVERNANCE_PACKAGE, envelope)
    assert _opa_decision(opa_engine, envelope) == (ours.allow, ours.deny, ours.warn)
    assert not ours.allow
