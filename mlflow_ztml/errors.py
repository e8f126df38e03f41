"""Typed errors. Every message says what went wrong and what the user can do about it.

The CLI maps `UsageError`/`InfrastructureError` subclasses to exit code 2 and a policy deny to 1.
"""


class ZtmlError(Exception):
    """Base class for every error ztml raises on purpose."""


class ConfigError(ZtmlError):
    """ztml.yaml or an environment variable is invalid, or names something unknown."""


class ManifestError(ZtmlError):
    """A ModelDeployment document is unreadable, malformed or of the wrong kind."""


class ModelNotFoundError(ZtmlError):
    """The model URI names a model, version or alias that the registry does not have."""


class RegistryUnavailableError(ZtmlError):
    """MLflow could not be reached or answered with a server error."""


class PolicyError(ZtmlError):
    """A policy could not be loaded or evaluated (compile error, engine down).

    Gates never let this escape as an allow: the engine turns it into a deny.
    """


class DeployError(ZtmlError):
    """A runtime could not start, update, verify or remove a deployment."""


class BuildError(ZtmlError):
    """The serving image could not be built or pushed."""


class ScanError(ZtmlError):
    """The image scanner could not run at all (not installed, timed out, unreadable output).

    A scanner that runs but lacks something (no vulnerability database) is not an error: the
    scan report says so and the scan policy decides.
    """


class DeploymentPolicyError(PolicyError):
    """The rendered Kubernetes objects were denied by the `ztml.deployment` policy.

    Raised by the kubernetes runtime before anything is applied; the pipeline maps it to
    `rejected`. `decision` is the policy Decision (deny/warn messages, engine) and `objects`
    the rendered objects that were judged (for the audit run).
    """

    def __init__(self, message: str, decision: object, objects: list[dict] | None = None) -> None:
        super().__init__(message)
        self.decision = decision
        self.objects = objects or []


class InvalidNameError(ConfigError):
    """A deployment name is not a DNS-1123 label that fits a Helm release (see names.py).

    A usage error (CLI exit 2), raised before anything is written to MLflow or started.
    """


class DeploymentConflictError(DeployError):
    """The deployment name is taken by a deployment of another model.

    A deploy never replaces another model's deployment: the message names the owner and asks
    for another `--name`. Raised before anything is written to MLflow.
    """


class SigningError(ZtmlError):
    """A signing or verification key could not be loaded or used (bad reference, unreadable or
    encrypted PEM without its passphrase, wrong curve, KMS refusal), or a signature could not be
    written to the registry. The message names the key reference, never key material.
    """


class SignatureVerificationError(ZtmlError):
    """An image's signature or attestation did not verify: unsigned, signed by another key,
    tampered, or attested for another environment. `reason` is the one-line cause for tags.
    """

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or message
