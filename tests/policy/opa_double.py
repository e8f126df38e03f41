"""TEST DOUBLE: a small HTTP server speaking the part of OPA's REST API that ztml uses.

This is NOT OPA. No `opa` binary can be installed where these tests run, so this server
implements the documented endpoints on top of the in-process regorus engine, to exercise
ztml's OPA-REST code path (opa-python-client, HTTP, JSON, error handling) for real:

    GET    /health                      200 {}
    GET    /v1/policies                 {"result": [{"id", "raw"}]}
    PUT    /v1/policies/{id}            text/plain Rego; 200 {} or 400 with OPA's error shape
    DELETE /v1/policies/{id}
    GET    /v1/data/{path}              {"result": value} or {} when undefined
    PUT    /v1/data/{path}              JSON document; 204
    PATCH  /v1/data/{path}              JSON Patch (add, replace, remove); 204
    POST   /v1/data/{path}              {"input": ...} -> {"result": value} or {} when undefined

Like OPA, sets come back as JSON arrays, and a policy that does not parse is rejected at
PUT time with `rego_parse_error`. Evaluation errors answer 500 `internal_error`.
Requests are served by many threads; every regorus call runs on one worker thread, since a
regorus Engine must stay on the thread that created it.
"""

from __future__ import annotations

import copy
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from mlflow_ztml.errors import PolicyError
from mlflow_ztml.policy.regorus import clean_error, prepare


class OpaDouble:
    """The state (policies, data) and the evaluation behind the HTTP handler."""

    def __init__(self) -> None:
        self.policies: dict[str, str] = {}
        self.data: dict[str, Any] = {}
        self.requests: list[tuple[str, str]] = []
        self._engine: Any = None
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="opa-double")

    def close(self) -> None:
        # Drop the regorus engine on the thread that made it, then stop that thread.
        self._run(self._reset)
        self._worker.shutdown(wait=True)

    def reset(self) -> None:
        """Forget every policy and document, as a restarted OPA would."""
        self._run(self._reset)

    def put_policy(self, policy_id: str, source: str) -> dict[str, Any] | None:
        """Store the module; an error document (OPA's shape) when it does not parse."""
        return self._run(self._put_policy, policy_id, source)

    def delete_policy(self, policy_id: str) -> bool:
        return self._run(self._delete_policy, policy_id)

    def put_data(self, path: list[str], value: Any) -> None:
        self._run(self._put_data, path, value)

    def patch_data(self, path: list[str], operations: list[dict[str, Any]]) -> None:
        self._run(self._patch_data, path, operations)

    def evaluate(self, path: list[str], input: Any) -> Any:
        """The value of data.<path> with `input`; None when undefined."""
        return self._run(self._evaluate, path, input)

    def _run(self, function: Any, *args: Any) -> Any:
        return self._worker.submit(function, *args).result()

    # Everything below runs on the single worker thread.

    def _reset(self) -> None:
        self.policies, self.data, self._engine = {}, {}, None

    def _put_policy(self, policy_id: str, source: str) -> dict[str, Any] | None:
        candidate = {**self.policies, policy_id: source}
        try:
            engine = prepare(candidate, self.data)
        except PolicyError as exc:
            return {
                "code": "invalid_parameter",
                "message": "error(s) occurred while compiling module(s)",
                "errors": [
                    {
                        "code": "rego_parse_error",
                        "message": str(exc),
                        "location": {"file": policy_id, "row": 0, "col": 0},
                    }
                ],
            }
        self.policies = candidate
        self._engine = engine
        return None

    def _delete_policy(self, policy_id: str) -> bool:
        if self.policies.pop(policy_id, None) is None:
            return False
        self._engine = None
        return True

    def _put_data(self, path: list[str], value: Any) -> None:
        if not path:
            self.data = value
        else:
            node = self.data
            for key in path[:-1]:
                node = node.setdefault(key, {})
            node[path[-1]] = value
        self._engine = None

    def _patch_data(self, path: list[str], operations: list[dict[str, Any]]) -> None:
        document = copy.deepcopy(self.data)
        for operation in operations:
            target = path + [p for p in operation["path"].split("/") if p]
            parent = document
            for key in target[:-1]:
                parent = parent.setdefault(key, {})
            if operation["op"] in ("add", "replace"):
                parent[target[-1]] = operation["value"]
            elif operation["op"] == "remove":
                parent.pop(target[-1], None)
            else:
                raise ValueError(f"unsupported patch op {operation['op']!r}")
        self.data = document
        self._engine = None

    def _evaluate(self, path: list[str], input: Any) -> Any:
        if self._engine is None:
            self._engine = prepare(self.policies, self.data)
        self._engine.set_input_json(json.dumps(input))
        query = ".".join(["data", *path])
        results = json.loads(self._engine.eval_query_as_json(query)).get("result") or []
        if not results or not results[0].get("expressions"):
            return None
        return results[0]["expressions"][0].get("value")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as OPA does
    # One buffered write per response and no Nagle: otherwise headers and body leave in two
    # packets and delayed ACKs add ~40 ms to every keep-alive request.
    wbufsize = 1 << 16
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        return

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        double = self.server.double
        route = urlsplit(self.path).path
        double.requests.append((method, route))
        body = self._body()
        try:
            if route == "/health" and method == "GET":
                return self._reply(HTTPStatus.OK, {})
            if route.startswith("/v1/policies"):
                return self._policies(
                    method, unquote(route[len("/v1/policies") :].strip("/")), body
                )
            if route == "/v1/data" or route.startswith("/v1/data/"):
                path = [unquote(p) for p in route[len("/v1/data") :].split("/") if p]
                return self._data(method, path, body)
            return self._reply(HTTPStatus.NOT_FOUND, _error("resource_not_found", route))
        except Exception as exc:  # OPA answers evaluation errors with 500 internal_error
            return self._reply(
                HTTPStatus.INTERNAL_SERVER_ERROR, _error("internal_error", clean_error(exc))
            )

    def _policies(self, method: str, policy_id: str, body: bytes) -> None:
        double = self.server.double
        if method == "GET" and not policy_id:
            listing = [{"id": k, "raw": v} for k, v in sorted(double.policies.items())]
            return self._reply(HTTPStatus.OK, {"result": listing})
        if method == "PUT" and policy_id:
            error = double.put_policy(policy_id, body.decode("utf-8"))
            return (
                self._reply(HTTPStatus.BAD_REQUEST, error)
                if error
                else self._reply(HTTPStatus.OK, {})
            )
        if method == "DELETE" and policy_id:
            if double.delete_policy(policy_id):
                return self._reply(HTTPStatus.OK, {})
            return self._reply(HTTPStatus.NOT_FOUND, _error("resource_not_found", policy_id))
        return self._reply(HTTPStatus.METHOD_NOT_ALLOWED, _error("invalid_parameter", method))

    def _data(self, method: str, path: list[str], body: bytes) -> None:
        double = self.server.double
        if method == "PUT":
            double.put_data(path, json.loads(body or b"null"))
            return self._reply(HTTPStatus.NO_CONTENT, None)
        if method == "PATCH":
            double.patch_data(path, json.loads(body or b"[]"))
            return self._reply(HTTPStatus.NO_CONTENT, None)
        if method in ("GET", "POST"):
            request = json.loads(body) if body else {}
            value = double.evaluate(path, request.get("input"))
            return self._reply(HTTPStatus.OK, {} if value is None else {"result": value})
        return self._reply(HTTPStatus.METHOD_NOT_ALLOWED, _error("invalid_parameter", method))

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _reply(self, status: HTTPStatus, document: Any) -> None:
        payload = b"" if document is None else json.dumps(document).encode("utf-8")
        self.send_response(status)
        if document is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def _error(code: str, message: str) -> dict[str, str]:
    return {"code": code, "message": message}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    double: OpaDouble


class OpaTestServer:
    """Start the test double on a free loopback port: `with OpaTestServer() as opa: opa.url`."""

    def __init__(self) -> None:
        self.double = OpaDouble()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.double = self.double
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> OpaTestServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self.double.close()

    def __enter__(self) -> OpaTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
