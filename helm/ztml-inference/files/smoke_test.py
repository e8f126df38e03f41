"""helm test: prove the release serves predictions, from inside the cluster.

Waits for /ready through the Service, takes the model's own input example from /model/info
(or ZTML_TEST_INPUT), POSTs it to /predict and checks that predictions come back for the
expected model version. Standard library only: it runs in the serving image.
"""

import json
import os
import sys
import time
import urllib.error
import urllib.request

BASE = os.environ["ZTML_TEST_URL"].rstrip("/")
if not BASE.startswith(("http://", "https://")):
    sys.exit(f"FAIL: ZTML_TEST_URL must be an http(s) URL, not {BASE!r}")
TIMEOUT = float(os.environ.get("ZTML_TEST_TIMEOUT", "120"))
EXPECTED_VERSION = os.environ.get("ZTML_EXPECTED_VERSION", "")
REQUEST_KEYS = {"inputs", "instances", "dataframe_split", "dataframe_records"}
HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
if os.environ.get("SERVING_API_KEY"):
    HEADERS["X-API-Key"] = os.environ["SERVING_API_KEY"]


def call(path, body=None):
    data = None if body is None else json.dumps(body).encode()
    # BASE is checked to be http(s) above.
    request = urllib.request.Request(BASE + path, data=data, headers=HEADERS)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()[:500].decode(errors="replace")


def main():
    deadline = time.monotonic() + TIMEOUT
    last = "no answer"
    while True:
        try:
            status, _ = call("/ready")
            if status == 200:
                break
            last = f"HTTP {status}"
        except OSError as exc:
            last = repr(exc)
        if time.monotonic() > deadline:
            sys.exit(f"FAIL: {BASE}/ready did not answer 200 within {TIMEOUT:.0f} s ({last})")
        time.sleep(2)

    explicit = os.environ.get("ZTML_TEST_INPUT", "")
    if explicit:
        body = json.loads(explicit)
    else:
        status, info = call("/model/info")
        if status != 200:
            sys.exit(f"FAIL: /model/info answered {status}: {info}")
        served = str(info.get("version") or "")
        if EXPECTED_VERSION and served and served != EXPECTED_VERSION:
            sys.exit(f"FAIL: serves version {served}, expected {EXPECTED_VERSION}")
        example = info.get("input_example")
        if example is None:
            sys.exit("FAIL: the model has no input example; set test.inputExample")
        wrapped = isinstance(example, dict) and len(example) == 1 and set(example) <= REQUEST_KEYS
        body = example if wrapped else {"inputs": example}

    status, answer = call("/predict", body)
    if status != 200:
        sys.exit(f"FAIL: /predict answered {status}: {answer}")
    predictions = answer.get("predictions") if isinstance(answer, dict) else None
    if predictions is None or (hasattr(predictions, "__len__") and len(predictions) == 0):
        sys.exit(f"FAIL: /predict returned no predictions: {str(answer)[:500]}")
    print(f"OK: {BASE}/predict returned {len(predictions)} prediction(s)")


if __name__ == "__main__":
    main()
