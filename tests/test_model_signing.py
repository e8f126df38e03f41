"""Model-file signing (OpenSSF model-signing): what the pipeline signs once the gate allows a
version, where the signature is recorded, how it travels to serving, and when unsigned models
are refused. Real keys (P-256 PEM files, and a KMS key in moto's emulator), real model files, a
real `mlflow server`, real serving processes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import mlflow
import pytest

from mlflow_ztml.build import BuildRequest, ImageBuilder
from mlflow_ztml.config import Settings, load_settings
from mlflow_ztml.errors import SigningError
from mlflow_ztml.pipeline import DeployOptions, Pipeline
from mlflow_ztml.registry import Registry
from mlflow_ztml.supply_chain import keys, model_files
from tests.models import GOOD_METRICS, register_sklearn
from tests.pipeline_fixtures import process_runtime


@pytest.fixture(scope="module")
def key_pair(tmp_path_factory: pytest.TempPathFactory) -> keys.GeneratedKeys:
    return keys.generate_key_pair(tmp_path_factory.mktemp("keys"))


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    model = tmp_path / "model"
    (model / "data").mkdir(parents=True)
    (model / "MLmodel").write_text("flavors: {}\n")
    (model / "data" / "weights.bin").write_bytes(bytes(range(256)) * 8)
    return model


# ----------------------------------------------------------------------------- sign / verify
def test_signature_covers_every_file_and_is_reused_for_the_same_files(
    model_dir: Path, key_pair: keys.GeneratedKeys, tmp_path: Path
) -> None:
    signer = keys.signer_from_reference(str(key_pair.private_key))
    cache = tmp_path / "cache"
    first = model_files.sign_directory(model_dir, signer, cache)
    again = model_files.sign_directory(model_dir, signer, cache)
    assert again.bundle == first.bundle  # one version, one image: the same bytes
    assert first.files == 2 and first.key_id == key_pair.key_id
    assert first.digest == "sha256:" + hashlib.sha256(first.bundle.encode()).hexdigest()
    signature, public_key = first.write(tmp_path / "sig")
    model_files.verify_directory(model_dir, signature, public_key)

    (model_dir / ".gitignore").write_text("*\n")  # model-signing's default would skip it
    with pytest.raises(SigningError, match=r"Extra files .*\.gitignore"):
        model_files.verify_directory(model_dir, signature, public_key)
    changed = model_files.sign_directory(model_dir, signer, cache)
    assert changed.bundle != first.bundle and changed.files == 3


def test_a_kms_key_signs_the_same_format(model_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """awskms:// keys sign through KMS (moto's emulator here: no AWS reachable)."""
    boto3 = pytest.importorskip("boto3")
    moto = pytest.importorskip("moto")
    for var, value in (("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test")):
        monkeypatch.setenv(var, value)
    with moto.mock_aws():
        kms = boto3.client("kms", region_name="eu-west-1")
        arn = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["Arn"]
        signer = keys.KmsSigner(f"awskms:///{arn}", client=kms)
        signature, public_key = model_files.sign_directory(model_dir, signer).write(tmp_path)
    model_files.verify_directory(model_dir, signature, public_key)


# ----------------------------------------------------------------------------- configuration
def test_production_requires_signed_models_unless_configured_otherwise() -> None:
    settings = Settings(
        environments={
            "eu-prod": {"policy_profile": "production"},
            "staging": {"require_signed_models": True},
            "production": {"require_signed_models": False},
        }
    )
    assert model_files.requires_signed_models(Settings(), "production")
    assert not model_files.requires_signed_models(Settings(), "local")
    assert model_files.requires_signed_models(settings, "eu-prod")
    assert model_files.requires_signed_models(settings, "staging")
    assert not model_files.requires_signed_models(settings, "production")
    with pytest.raises(SigningError, match="production runs only signed model files"):
        model_files.deployment_settings(Settings(), "production", None)
    assert model_files.deployment_settings(Settings(), "local", None) == {}


def test_the_image_build_context_carries_the_signature(
    model_dir: Path, key_pair: keys.GeneratedKeys, tmp_path: Path
) -> None:
    signature = model_files.sign_directory(
        model_dir, keys.signer_from_reference(str(key_pair.private_key))
    )
    (model_dir / "requirements.txt").write_text("mlflow==3.17.2\n")
    builder = ImageBuilder(
        Settings(home=tmp_path), client=object(), model_downloader=_copy_from(model_dir)
    )
    signed = BuildRequest(
        model_name="m",
        model_version="1",
        environment="production",
        model_signature=signature.bundle,
        model_public_key=signature.public_key_pem,
    )
    context = tmp_path / "ctx"
    context.mkdir()
    builder.prepare_context(signed, context)
    assert (context / "model-signature" / "model.sig").read_text() == signature.bundle
    assert (
        (context / "model-signature" / "model-signing.pub")
        .read_text()
        .startswith("-----BEGIN PUBLIC KEY-----")
    )
    args = builder._buildargs(signed)
    assert args["MODEL_SIGNATURE"] == "/opt/model-signature/model.sig"
    assert args["MODEL_PUBLIC_KEY"] == "/opt/model-signature/model-signing.pub"
    dockerfile = (context / "serving" / "Dockerfile").read_text()
    assert "COPY model-signature/ /opt/model-signature/" in dockerfile
    assert "SERVING_MODEL_SIGNATURE=${MODEL_SIGNATURE}" in dockerfile

    unsigned = signed.model_copy(update={"model_signature": None, "model_public_key": None})
    context = tmp_path / "ctx-unsigned"
    context.mkdir()
    builder.prepare_context(unsigned, context)
    assert list((context / "model-signature").iterdir()) == []
    assert "MODEL_SIGNATURE" not in builder._buildargs(unsigned)


def _copy_from(source: Path):
    import shutil

    def download(_uri: str, destination: Path) -> None:
        shutil.copytree(source, destination, dirs_exist_ok=True)

    return download


# ----------------------------------------------------------------------------- the pipeline
@pytest.mark.slow
def test_the_pipeline_signs_records_and_serving_verifies(
    ztml_env, monkeypatch, key_pair: keys.GeneratedKeys, tmp_path: Path
) -> None:
    monkeypatch.setenv("ZTML_SIGNING__KEY", str(key_pair.private_key))
    monkeypatch.setenv("ZTML_ENVIRONMENTS__LOCAL__REQUIRE_SIGNED_MODELS", "true")
    version = register_sklearn(ztml_env.url, "signed-model", metrics=GOOD_METRICS)
    uri = f"models:/signed-model/{version}"
    pipeline = Pipeline(load_settings())
    outcome = pipeline.run(uri, "local", DeployOptions())
    try:
        assert outcome.status == "deployed", outcome.error
        client = mlflow.MlflowClient(ztml_env.url)
        audit = client.get_run(outcome.audit_run_id)
        assert audit.data.tags["ztml.model_signature.key_id"] == key_pair.key_id
        folder = Path(
            mlflow.artifacts.download_artifacts(
                run_id=outcome.audit_run_id,
                artifact_path="model-signature",
                tracking_uri=ztml_env.url,
            )
        )
        bundle = (folder / "model.sig").read_bytes()
        digest = "sha256:" + hashlib.sha256(bundle).hexdigest()
        assert audit.data.tags["ztml.model_signature.digest"] == digest
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["signature_digest"] == digest and summary["files"] >= 4
        # The recorded signature verifies the registry's own files, with the recorded key.
        fresh = Registry(load_settings()).download_model(uri, tmp_path / "fresh")
        model_files.verify_directory(fresh, folder / "model.sig", folder / "model-signing.pub")

        # The process runtime shipped it beside its copy; the server checked before loading.
        record = process_runtime()._read("signed-model-local")
        assert (Path(record["dir"]) / "model.sig").read_bytes() == bundle
        assert "model files match their signature" in Path(record["log"]).read_text()

        again = pipeline.run(uri, "local", DeployOptions())
        assert again.status == "unchanged", again.error  # re-signing keeps it idempotent
        tags = client.get_run(again.audit_run_id).data.tags
        assert tags["ztml.model_signature.digest"] == digest
    finally:
        pipeline.delete("signed-model-local", "local")


@pytest.mark.slow
def test_unsigned_models_are_refused_where_signatures_are_required(ztml_env, monkeypatch) -> None:
    monkeypatch.setenv("ZTML_ENVIRONMENTS__LOCAL__REQUIRE_SIGNED_MODELS", "true")
    version = register_sklearn(ztml_env.url, "unsigned-model", metrics=GOOD_METRICS)
    outcome = Pipeline(load_settings()).run(
        f"models:/unsigned-model/{version}", "local", DeployOptions()
    )
    assert outcome.status == "failed"
    assert "local runs only signed model files" in (outcome.error or "")
    assert process_runtime().get("unsigned-model-local") is None  # nothing was started
    tags = mlflow.MlflowClient(ztml_env.url).get_model_version("unsigned-model", version).tags
    assert "signing key" in tags["ztml.local.error"]
