"""In-process Rego evaluation with regorus (the default engine).

A regorus Engine is bound to the thread that created it (pyo3 `unsendable`: using or even
cloning it from another thread panics, and dropping it elsewhere leaks it with a warning),
so each thread lazily prepares its own engine from the same modules and data (about 1 ms,
once per thread). That keeps `decide` thread-safe without a lock on the hot path.
The per-thread engines live in one module-level thread-local, not on the RegorusEngine: a
RegorusEngine that is garbage-collected never drops another thread's engine; each thread
drops its own engines of dead RegorusEngines the next time it prepares one, or when it
exits. The constructor prepares the calling thread's engine, so a policy that does not
parse is known before the first decision.

Decisions identical to OPA's: every engine is prepared through `compat` (see
docs/rego-divergences.md): the builtins where regorus answers differently are overridden
with OPA's behaviour, arithmetic is rewritten to OPA's, and a construct regorus cannot
evaluate as OPA does is refused with its file and line (as is an input holding an integer
beyond 64 bits).

Fail closed: a parse error or a refused construct while preparing, or a compile/evaluation
error while deciding, is a Decision with `allow=False` carrying the message; `decide` never
raises.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import weakref
from collections.abc import Mapping
from typing import Any

import regorus

from mlflow_ztml.errors import PolicyError
from mlflow_ztml.policy import compat
from mlflow_ztml.policy.bundle import PolicyBundle
from mlflow_ztml.policy.engine import Decision, check_package, decision_from_document

# Rust reads this when an error is raised: without it regorus errors may carry a backtrace.
os.environ.setdefault("RUST_LIB_BACKTRACE", "0")

# This thread's engines: RegorusEngine token -> (weak ref to its RegorusEngine, engine).
_THREAD = threading.local()
_TOKENS = itertools.count()

_ANSWERS = (
    '{{"deny": data.{package}.deny, "warn": data.{package}.warn, "allow": data.{package}.allow}}'
)


def clean_error(exc: BaseException) -> str:
    """regorus' message without its leading blank line and any backtrace."""
    text = str(exc).strip()
    return text.split("\nStack backtrace:")[0].strip() or type(exc).__name__


def prepare(modules: Mapping[str, str], data: Mapping[str, Any] | str) -> regorus.Engine:
    """A regorus Engine holding `modules` and `data` (a document or its JSON text), with
    OPA's behaviour installed (compat).

    Raises PolicyError naming the module that does not parse, RegoDivergenceError listing
    the constructs it refuses. The engine may only be used by the calling thread.
    """
    prepared = compat.prepare_modules(modules)
    engine = regorus.Engine()
    compat.install(engine)
    for module_id, source in prepared.items():
        try:
            engine.add_policy(module_id, source)
        except Exception as exc:  # regorus raises RuntimeError/ValueError for parse errors
            raise PolicyError(f"cannot parse policy {module_id}: {clean_error(exc)}") from exc
    try:
        engine.add_data_json(data if isinstance(data, str) else json.dumps(data))
    except Exception as exc:
        raise PolicyError(f"cannot load policy data: {clean_error(exc)}") from exc
    return engine


class RegorusEngine:
    """`PolicyEngine` evaluating Rego in-process. Build it once; share it between threads."""

    name = "regorus"

    def __init__(self, modules: Mapping[str, str], data: Mapping[str, Any]) -> None:
        self._modules = dict(modules)
        self._data = "{}"
        self._token = next(_TOKENS)
        self._error: str | None = None
        try:
            self._data = json.dumps(data)
            self._engine()
        except (TypeError, ValueError) as exc:
            self._error = f"policy data is not JSON: {exc}"
        except PolicyError as exc:
            self._error = str(exc)

    @classmethod
    def from_bundle(cls, bundle: PolicyBundle) -> RegorusEngine:
        return cls(bundle.modules, bundle.data)

    def decide(self, package: str, input: dict[str, Any]) -> Decision:
        """Evaluate `data.<package>` on `input`; any error is a deny carrying it."""
        if self._error is not None:
            return Decision.failed(self.name, package, self._error)
        try:
            check_package(package)
            document = self._decision_document(package, input)
        except PolicyError as exc:
            return Decision.failed(self.name, package, str(exc))
        return decision_from_document(document, engine=self.name, package=package)

    def _decision_document(self, package: str, input: dict[str, Any]) -> Any:
        # Asking for the three answers only is ~20% faster than the whole package document
        # (which also serialises every helper rule). When that is undefined (a package
        # without `warn`, say), the whole document lets decision_from_document say why.
        try:
            document = self.evaluate(_ANSWERS.format(package=package), input)
        except PolicyError:
            document = None
        if document is None:
            document = self.evaluate(f"data.{package}", input)
        return document

    def evaluate(self, query: str, input: dict[str, Any]) -> Any:
        """The value of one Rego expression on `input` (None when undefined)."""
        try:
            payload = json.dumps(input, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise PolicyError(f"policy input is not JSON-serialisable: {exc}") from exc
        compat.check_input(input)
        engine = self._engine()
        try:
            engine.set_input_json(payload)
            raw = engine.eval_query_as_json(query)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # RuntimeError for compile/eval errors; pyo3 panics too
            raise PolicyError(f"policy evaluation failed: {clean_error(exc)}") from exc
        results = json.loads(raw).get("result") or []
        if not results or not results[0].get("expressions"):
            return None
        return results[0]["expressions"][0].get("value")

    def _engine(self) -> regorus.Engine:
        """This thread's engine for these policies, prepared on first use."""
        engines: dict[int, tuple[weakref.ref[RegorusEngine], regorus.Engine]] | None
        engines = getattr(_THREAD, "engines", None)
        if engines is None:
            engines = _THREAD.engines = {}
        entry = engines.get(self._token)
        if entry is not None:
            return entry[1]
        for token in [t for t, (owner, _) in engines.items() if owner() is None]:
            del engines[token]  # engines of collected RegorusEngines, dropped on their thread
        engine = prepare(self._modules, self._data)
        engines[self._token] = (weakref.ref(self), engine)
        return engine
