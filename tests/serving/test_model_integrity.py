"""Serving verifies the model files against their OpenSSF model-signing signature before it loads
anything: a real sklearn model, signed the way the pipeline signs it (mlflow_ztml's
supply_chain.model_files with a real P-256 key), started through `python -m serving`'s real
startup. A flipped byte, a missing file, an extra file, a signature by another key, or no
signature where one is required: exit 1, and the last stderr line says why, naming the file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mlflow_ztml.supply_chain import keys, model_files
from tests.serving.conftest import REPO, Server, wait_ready

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny sklearn model dir, its signature and public key, and a second key pair."""
    import mlflow.sklearn
    from sklearn.linear_model import LogisticRegression

    from tests.models import training_frame

    root = tmp_path_factory.mktemp("signed")
    frame, labels = training_frame(rows=60)
    mlflow.sklearn.save_model(
        LogisticRegression().fit(frame, labels),
        root / "model",
        input_example=frame.head(2),
        pip_requirements=["mlflow==3.17.2"],
    )
    ours = keys.generate_key_pair(root / "keys")
    other = keys.generate_key_pair(root / "other-keys")
    signer = keys.signer_from_reference(str(ours.private_key))
    signature = model_files.sign_directory(root / "model", signer)
    sig, pub = signature.write(root / "signature")
    other_signer = keys.signer_from_reference(str(other.private_key))
    other_sig, other_pub = model_files.sign_directory(root / "model", other_signer).write(
        root / "other-signature"
    )
    return {
        "root": root,
        "model": root / "model",
        "sig": sig,
        "pub": pub,
        "other_sig": other_sig,
        "other_pub": other_pub,
        "key_id": ours.key_id,
    }


def _weights(model: Path) -> Path:
    """The largest file of the model: its serialised estimator."""
    return max((p for p in model.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def _start(model: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SERVING_", "MLFLOW_"))}
    return subprocess.Popen(
        [sys.executable, "-m", "serving", "--port", "0", "--model-uri", str(model)],
        cwd=REPO,
        env={**base, "PYTHONPATH": str(REPO), **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(scope="module")
def refused(signed: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Every refusal case started at once (each is a real `python -m serving` start), so the
    module costs one server start-up, not five. Case -> (exit code, last stderr line, file)."""
    root = tmp_path_factory.mktemp("cases")
    cases: dict[str, tuple[Path, dict[str, str], str]] = {}

    def copy(name: str) -> Path:
        target = root / name / "model"
        shutil.copytree(signed["model"], target)
        return target

    with_signature = {
        "SERVING_MODEL_SIGNATURE": str(signed["sig"]),
        "SERVING_MODEL_PUBLIC_KEY": str(signed["pub"]),
        "SERVING_MODEL_PUBLIC_KEY_ID": str(signed["key_id"]),
    }
    flipped = copy("flipped")
    weights = _weights(flipped)
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    cases["flipped"] = (flipped, with_signature, weights.name)

    missing = copy("missing")
    (missing / "requirements.txt").unlink()
    cases["missing"] = (missing, with_signature, "requirements.txt")

    extra = copy("extra")
    (extra / "sitecustomize.py").write_text("print('injected')\n")
    cases["extra"] = (extra, with_signature, "sitecustomize.py")

    cases["other_key"] = (
        copy("other_key"),
        {
            "SERVING_MODEL_SIGNATURE": str(signed["other_sig"]),
            "SERVING_MODEL_PUBLIC_KEY": str(signed["pub"]),
        },
        "",
    )
    # whoever can change the files re-signs them and swaps the key beside them: the key id the
    # control plane set in the environment is what is trusted
    cases["key_swapped"] = (
        copy("key_swapped"),
        {
            "SERVING_MODEL_SIGNATURE": str(signed["other_sig"]),
            "SERVING_MODEL_PUBLIC_KEY": str(signed["other_pub"]),
            "SERVING_MODEL_PUBLIC_KEY_ID": str(signed["key_id"]),
        },
        "",
    )
    cases["required_without_key_id"] = (
        copy("no_key_id"),
        {
            "SERVING_MODEL_SIGNATURE": str(signed["sig"]),
            "SERVING_MODEL_PUBLIC_KEY": str(signed["pub"]),
            "SERVING_REQUIRE_MODEL_SIGNATURE": "true",
        },
        "",
    )
    cases["unsigned_required"] = (
        copy("unsigned"),
        {"SERVING_REQUIRE_MODEL_SIGNATURE": "true"},
        "",
    )
    procs = {name: _start(model, env) for name, (model, env, _) in cases.items()}
    results = {}
    for name, proc in procs.items():
        try:
            _, stderr = proc.communicate(timeout=180)
        except subprocess.TimeoutExpired:  # it served: the check let the model through
            proc.kill()
            _, stderr = proc.communicate()
            stderr += "\n(still serving after 180 s)"
        lines = stderr.strip().splitlines() or [""]
        results[name] = (proc.returncode, lines[-1], cases[name][2])
    return results


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("flipped", "do not match their signature (changed: "),
        ("missing", "do not match their signature (missing: "),
        ("extra", "do not match their signature (extra: "),
        ("other_key", "does not verify with"),
        ("key_swapped", "is not the trusted key"),
        ("required_without_key_id", "no trusted key id is set"),
        ("unsigned_required", "requires signed model files"),
    ],
)
def test_tampered_or_unsigned_model_is_refused(refused: dict, case: str, reason: str) -> None:
    code, last, file = refused[case]
    assert code == 1, last
    assert last.startswith("serving: cannot start: ModelLoadError: "), last
    assert reason in last, last
    assert file in last, last


def test_the_signed_model_starts_and_its_signature_verifies_with_model_signing_itself(
    signed: dict[str, Path], tmp_path: Path
) -> None:
    """The untouched model serves; and model-signing's own CLI accepts ztml's signature (the
    format is the ecosystem's, not ztml's)."""
    server = Server(
        "signed",
        str(signed["model"]),
        tmp_path,
        {
            "SERVING_MODEL_SIGNATURE": str(signed["sig"]),
            "SERVING_MODEL_PUBLIC_KEY": str(signed["pub"]),
            "SERVING_MODEL_PUBLIC_KEY_ID": str(signed["key_id"]),
            "SERVING_REQUIRE_MODEL_SIGNATURE": "true",
        },
    )
    try:
        wait_ready([server])
        assert "model files match their signature" in server.log()
    finally:
        server.stop()
    cli = Path(sys.executable).with_name("model_signing")
    done = subprocess.run(
        [
            str(cli),
            "verify",
            "key",
            *("--signature", str(signed["sig"])),
            *("--public_key", str(signed["pub"])),
            str(signed["model"]),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Verification succeeded" in done.stdout
