"""Signing keys by reference: generated files, env://, encrypted PEMs, and AWS KMS (moto)."""

from __future__ import annotations

import stat
from pathlib import Path

import boto3
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from moto import mock_aws

from mlflow_ztml.cli import main
from mlflow_ztml.config import Settings, load_settings
from mlflow_ztml.errors import ConfigError, SigningError
from mlflow_ztml.supply_chain import keys


def test_generate_writes_a_private_key_only_its_owner_reads(tmp_path: Path) -> None:
    generated = keys.generate_key_pair(tmp_path / "k")
    assert stat.S_IMODE(generated.private_key.stat().st_mode) == 0o600
    signer = keys.signer_from_reference(str(generated.private_key))
    verifier = keys.verifier_from_reference(str(generated.public_key))
    assert signer.key_id == verifier.key_id == generated.key_id
    assert verifier.verify(b"payload", signer.sign(b"payload"))
    assert not verifier.verify(b"payloaD", signer.sign(b"payload"))
    with pytest.raises(SigningError, match="already exists; pass --force"):
        keys.generate_key_pair(tmp_path / "k")


def test_cli_generates_keys_and_refuses_to_overwrite(tmp_path: Path) -> None:
    runner = CliRunner()
    first = runner.invoke(main, ["keys", "generate", "--out", str(tmp_path)])
    assert first.exit_code == 0, first.output
    assert "key id:      sha256:" in first.output
    again = runner.invoke(main, ["keys", "generate", "--out", str(tmp_path)])
    assert again.exit_code == 2
    assert "already exists" in again.output
    assert "PRIVATE KEY" not in first.output + again.output


def test_env_reference_and_yaml_and_env_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    generated = keys.generate_key_pair(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ZTML_CONFIG", raising=False)
    monkeypatch.setenv("ZTML_TEST_SIGNING_PEM", generated.private_key.read_text())
    (tmp_path / "ztml.yaml").write_text("signing:\n  key: env://ZTML_TEST_SIGNING_PEM\n")
    from_yaml = load_settings()
    assert from_yaml.signing.key == "env://ZTML_TEST_SIGNING_PEM"
    assert keys.load_signer(from_yaml).key_id == generated.key_id
    monkeypatch.setenv("ZTML_SIGNING__PUBLIC_KEY", str(generated.public_key))
    assert keys.load_verifier(load_settings()).key_id == generated.key_id
    (tmp_path / "ztml.yaml").write_text("signing:\n  keyfile: x\n")
    with pytest.raises(ConfigError, match=r"signing\.keyfile"):
        load_settings()
    (tmp_path / "ztml.yaml").unlink()
    monkeypatch.delenv("ZTML_TEST_SIGNING_PEM")
    with pytest.raises(SigningError, match="ZTML_TEST_SIGNING_PEM is not set"):
        keys.load_signer(Settings(signing={"key": "env://ZTML_TEST_SIGNING_PEM"}))


def test_encrypted_key_needs_its_passphrase(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    generated = keys.generate_key_pair(tmp_path, passphrase=b"correct horse")
    with pytest.raises(SigningError, match=r"encrypted: set signing\.passphrase_env"):
        keys.load_signer(Settings(signing={"key": str(generated.private_key)}))
    monkeypatch.setenv("ZTML_TEST_PASS", "correct horse")
    signer = keys.load_signer(
        Settings(signing={"key": str(generated.private_key), "passphrase_env": "ZTML_TEST_PASS"})
    )
    assert signer.key_id == generated.key_id


def test_other_curves_are_refused_by_name(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    path = tmp_path / "p384.key"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(SigningError, match=r"not an ECDSA P-256 key .*secp384r1"):
        keys.signer_from_reference(str(path))
    with pytest.raises(SigningError, match="cannot read it"):
        keys.signer_from_reference(str(tmp_path / "missing.key"))


@pytest.fixture
def kms(monkeypatch: pytest.MonkeyPatch):
    """moto's in-process KMS: a fake, because no real KMS can be reached from here."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    with mock_aws():
        yield boto3.client("kms", region_name="eu-west-1")


def test_kms_key_signs_and_its_public_key_verifies(kms) -> None:
    arn = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["Arn"]
    kms.create_alias(AliasName="alias/ztml-signing", TargetKeyId=arn)
    settings = Settings(signing={"key": "awskms:///alias/ztml-signing"})
    signer = keys.load_signer(settings)
    verifier = keys.load_verifier(settings)
    payload = b'{"critical": {}}'
    signature = signer.sign(payload)
    assert verifier.verify(payload, signature)
    # the public key KMS hands out is the one a file-based verifier is given
    pem_verifier = keys.Verifier(serialization.load_pem_public_key(signer.public_key_pem()), "pem")
    assert pem_verifier.verify(payload, signature)
    assert keys.verifier_from_reference(f"awskms:///{arn}").key_id == signer.key_id


def test_kms_errors_name_the_key_and_the_cause(kms) -> None:
    rsa = kms.create_key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    with pytest.raises(SigningError, match="not an ECDSA P-256 key"):
        keys.signer_from_reference(f"awskms:///{rsa}").key_id  # noqa: B018
    with pytest.raises(SigningError, match="KMS get_public_key with key alias/nope failed"):
        keys.signer_from_reference("awskms:///alias/nope").public_key_pem()
    with pytest.raises(SigningError, match="invalid KMS key reference"):
        keys.signer_from_reference("awskms://just-a-host")


def test_kms_reference_forms() -> None:
    ref = keys.KmsReference.parse("awskms://localhost:4566/alias/x")
    assert (ref.endpoint, ref.key) == ("localhost:4566", "alias/x")
    arn = "arn:aws:kms:us-east-2:111122223333:key/1234abcd"
    assert keys.KmsReference.parse(f"awskms:///{arn}").region(None) == "us-east-2"
    assert keys.KmsReference.parse(f"awskms:///{arn}").region("eu-west-1") == "eu-west-1"
