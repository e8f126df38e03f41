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

Speed (benchmarks/gate_bench.py): the policies are parsed, rewritten and compiled once per
thread and the data is loaded once; per decision the input is serialised once (that text is
the only thing handed to regorus, and only when it changed), and a decision is a pure
function of (package, input) for policies that call no impure builtin (time.now_ns,
http.send, rand.*, ...), so the last `cache_size` decisions are remembered by their input
text: deciding an input already judged costs a dictionary look-up, not an evaluation.
A decision that carries an error is never remembered.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import re
import threading
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
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

DEFAULT_CACHE_SIZE = 1024

# Builtins whose answer is not a function of their arguments: a policy calling any of them
# (even in a comment: the test is textual, and errs towards not caching) is never cached.
_IMPURE = re.compile(
    r"\b(time\.now_ns|time\.date|time\.clock|time\.weekday|http\.send|rand\.|uuid\.|"
    r"opa\.runtime|net\.lookup_ip_addr|io\.jwt\.decode_verify|crypto\.x509\.parse_and_verify)"
)


def is_pure(modules: Mapping[str, str]) -> bool:
    """Whether no module calls a builtin whose answer depends on the clock, the network or
    chance: then a decision depends only on the package and the input."""
    return not any(_IMPURE.search(source) for source in modules.values())


class DecisionCache:
    """The last `size` decisions by (package, input JSON text), least recently used out.

    Thread-safe. Hands out copies: a caller that edits its Decision changes nobody else's.
    """

    def __init__(self, size: int) -> None:
        self.size = max(0, size)
        self._entries: OrderedDict[tuple[str, str], Decision] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> Decision | None:
        if not self.size:
            return None
        with self._lock:
            decision = self._entries.get(key)
            if decision is None:
                return None
            self._entries.move_to_end(key)
        return _copy(decision)

    def put(self, key: tuple[str, str], decision: Decision) -> None:
        if not self.size or decision.error is not None:
            return
        with self._lock:
            self._entries[key] = _copy(decision)
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


_IMMUTABLE = (str, int, float, bool, type(None))


def _copy(decision: Decision) -> Decision:
    """A copy nobody else holds, whatever fields Decision has: lists of plain values copied
    flat (about 5x cheaper than a deep copy), anything else mutable deep-copied."""
    update: dict[str, Any] = {}
    for name, value in decision.__dict__.items():
        if isinstance(value, list) and all(isinstance(item, _IMMUTABLE) for item in value):
            update[name] = list(value)
        elif isinstance(value, list | dict | set):
            update[name] = copy.deepcopy(value)
    return decision.model_copy(update=update)


def clean_error(exc: BaseException) -> str:
    """regorus' message without its leading blank line and any backtrace."""
    text = str(exc).strip()
    return text.split("\nStack backtrace:")[0].strip() or type(exc).__name__


def prepare(
    modules: Mapping[str, str], data: Mapping[str, Any] | str, rewrite_cache: Path | None = None
) -> regorus.Engine:
    """A regorus Engine holding `modules` and `data` (a document or its JSON text), with
    OPA's behaviour installed (compat; the rewritten modules kept in `rewrite_cache`).

    Raises PolicyError naming the module that does not parse, RegoDivergenceError listing
    the constructs it refuses. The engine may only be used by the calling thread.
    """
    prepared = compat.prepare_modules(modules, rewrite_cache)
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

    def __init__(
        self,
        modules: Mapping[str, str],
        data: Mapping[str, Any],
        cache_size: int = DEFAULT_CACHE_SIZE,
        rewrite_cache: Path | None = None,
    ) -> None:
        """`cache_size`: how many decisions to remember (0: none; impure policies: none).
        `rewrite_cache`: a directory keeping the compat rewrite of the modules across
        processes (compat/cache.py); None: none."""
        self._modules = dict(modules)
        self._rewrite_cache = rewrite_cache
        self._data = "{}"
        self._token = next(_TOKENS)
        self._error: str | None = None
        self.cache = DecisionCache(cache_size if is_pure(self._modules) else 0)
        try:
            self._data = json.dumps(data)
            self._engine()
        except (TypeError, ValueError) as exc:
            self._error = f"policy data is not JSON: {exc}"
        except PolicyError as exc:
            self._error = str(exc)

    @classmethod
    def from_bundle(
        cls,
        bundle: PolicyBundle,
        cache_size: int = DEFAULT_CACHE_SIZE,
        rewrite_cache: Path | None = None,
    ) -> RegorusEngine:
        return cls(bundle.modules, bundle.data, cache_size, rewrite_cache)

    def decide(self, package: str, input: dict[str, Any]) -> Decision:
        """Evaluate `data.<package>` on `input`; any error is a deny carrying it."""
        if self._error is not None:
            return Decision.failed(self.name, package, self._error)
        try:
            check_package(package)
            payload = _payload(input)
            key = (package, payload)
            cached = self.cache.get(key)
            if cached is not None:
                return cached
            compat.check_input(input, payload=payload)
            document = self._decision_document(package, payload)
        except PolicyError as exc:
            return Decision.failed(self.name, package, str(exc))
        decision = decision_from_document(document, engine=self.name, package=package)
        self.cache.put(key, decision)
        return decision

    def _decision_document(self, package: str, payload: str) -> Any:
        # Asking for the three answers only is ~20% faster than the whole package document
        # (which also serialises every helper rule). When that is undefined (a package
        # without `warn`, say), the whole document lets decision_from_document say why.
        try:
            document = self._evaluate(_ANSWERS.format(package=package), payload)
        except PolicyError:
            document = None
        if document is None:
            document = self._evaluate(f"data.{package}", payload)
        return document

    def evaluate(self, query: str, input: dict[str, Any]) -> Any:
        """The value of one Rego expression on `input` (None when undefined)."""
        payload = _payload(input)
        compat.check_input(input, payload=payload)
        return self._evaluate(query, payload)

    def _evaluate(self, query: str, payload: str) -> Any:
        """`evaluate` on an input already serialised (and checked) as `payload`."""
        engine, last = self._engine_and_input()
        try:
            if last[0] is not payload and last[0] != payload:  # the input only when it changed
                last[0] = None
                engine.set_input_json(payload)
                last[0] = payload
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
        return self._engine_and_input()[0]

    def _engine_and_input(self) -> tuple[regorus.Engine, list[str | None]]:
        """This thread's engine and the input text it holds ([None] before the first)."""
        engines: dict[int, tuple[weakref.ref[RegorusEngine], regorus.Engine, list[str | None]]]
        engines = getattr(_THREAD, "engines", None)
        if engines is None:
            engines = _THREAD.engines = {}
        entry = engines.get(self._token)
        if entry is not None:
            return entry[1], entry[2]
        for token in [t for t, (owner, _, _) in engines.items() if owner() is None]:
            del engines[token]  # engines of collected RegorusEngines, dropped on their thread
        engine = prepare(self._modules, self._data, self._rewrite_cache)
        last: list[str | None] = [None]
        engines[self._token] = (weakref.ref(self), engine, last)
        return engine, last


def _payload(input: dict[str, Any]) -> str:
    """The input as the JSON text regorus reads (and the decision cache's key)."""
    try:
        return json.dumps(input, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise PolicyError(f"policy input is not JSON-serialisable: {exc}") from exc
