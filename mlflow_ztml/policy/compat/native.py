"""regorus' own builtins, reachable from an override that only fixes their arguments.

An override registered under a builtin's name shadows that builtin in the engine it is
installed on, so an override that wants the original (regex.match after translating Go's
pattern syntax, say) calls it here: in a separate, plain regorus engine, one per thread
(regorus engines are bound to the thread that made them).
"""

from __future__ import annotations

import threading
from typing import Any

import regorus

_POLICY = """package native
import rego.v1
regex_match := regex.match(input.args[0], input.args[1])
regex_is_valid := regex.is_valid(input.args[0])
regex_find_n := regex.find_n(input.args[0], input.args[1], input.args[2])
regex_find_all := regex.find_all_string_submatch_n(input.args[0], input.args[1], input.args[2])
regex_replace := regex.replace(input.args[0], input.args[1], input.args[2])
regex_split := regex.split(input.args[0], input.args[1])
"""

_LOCAL = threading.local()


def _engine() -> regorus.Engine:
    engine = getattr(_LOCAL, "engine", None)
    if engine is None:
        engine = regorus.Engine()
        engine.add_policy("ztml-native.rego", _POLICY)
        _LOCAL.engine = engine
    return engine


def call(rule: str, *args: Any) -> Any:
    """The value of `data.native.<rule>` for `args` (None when undefined).

    Raises whatever regorus raises for an evaluation error, with its message.
    """
    engine = _engine()
    engine.set_input({"args": list(args)})
    return engine.eval_rule(f"data.native.{rule}")
