# The signing key (supply chain): ECC_NIST_P256 / SIGN_VERIFY, and only the controller's IRSA
# role may sign with it. Offline, with a mocked AWS provider.

mock_provider "aws" {
  mock_data "aws_caller_identity" {
    defaults = { account_id = "123456789012" }
  }
  mock_data "aws_partition" {
    defaults = { partition = "aws" }
  }
  mock_resource "aws_eks_cluster" {
    defaults = {
      arn                   = "arn:aws:eks:eu-west-1:123456789012:cluster/ztml"
      identity              = [{ oidc = [{ issuer = "https://oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLE" }] }]
      certificate_authority = [{ data = "Y2E=" }]
    }
  }
  mock_resource "aws_iam_openid_connect_provider" {
    defaults = { arn = "arn:aws:iam::123456789012:oidc-provider/oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLE" }
  }
  mock_resource "aws_ecr_repository" {
    defaults = {
      arn            = "arn:aws:ecr:eu-west-1:123456789012:repository/ztml-models"
      repository_url = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/ztml-models"
    }
  }
  mock_resource "aws_kms_key" {
    defaults = { arn = "arn:aws:kms:eu-west-1:123456789012:key/11111111-2222-3333-4444-555555555555" }
  }
  mock_resource "aws_s3_bucket" {
    defaults = { arn = "arn:aws:s3:::ztml-mlflow-artifacts-123456789012" }
  }
  mock_resource "aws_iam_role" {
    defaults = { arn = "arn:aws:iam::123456789012:role/ztml-mock" }
  }
  mock_resource "aws_launch_template" {
    defaults = { id = "lt-0123456789abcdef0", latest_version = 1 }
  }
  mock_resource "aws_cloudwatch_log_group" {
    defaults = { arn = "arn:aws:logs:eu-west-1:123456789012:log-group:/mock" }
  }
}

run "signing_key" {
  command = apply

  override_resource {
    target = aws_iam_role.controller
    values = { arn = "arn:aws:iam::123456789012:role/ztml-controller" }
  }
  override_resource {
    target = aws_kms_key.signing
    values = { arn = "arn:aws:kms:eu-west-1:123456789012:key/99999999-8888-7777-6666-555555555555" }
  }

  assert {
    condition     = aws_kms_key.signing.customer_master_key_spec == "ECC_NIST_P256" && aws_kms_key.signing.key_usage == "SIGN_VERIFY"
    error_message = "the signing key is ECC_NIST_P256 for SIGN_VERIFY (what cosign and model-signing use)"
  }

  assert {
    condition = alltrue([
      for s in jsondecode(aws_kms_key.signing.policy).Statement :
      !contains(flatten([s.Action]), "kms:Sign") || s.Effect == "Deny" || s.Principal.AWS == "arn:aws:iam::123456789012:role/ztml-controller"
    ])
    error_message = "no statement but the controller's allows kms:Sign"
  }

  assert {
    condition = alltrue([
      for s in jsondecode(aws_kms_key.signing.policy).Statement :
      !anytrue([for a in flatten([s.Action]) : a == "kms:*" || a == "kms:Sign*" || a == "*"])
    ])
    error_message = "no wildcard action may grant kms:Sign"
  }

  assert {
    condition = anytrue([
      for s in jsondecode(aws_kms_key.signing.policy).Statement :
      s.Effect == "Allow" && s.Principal.AWS == "arn:aws:iam::123456789012:role/ztml-controller" && toset(flatten([s.Action])) == toset(["kms:Sign", "kms:GetPublicKey", "kms:DescribeKey"])
    ])
    error_message = "the controller's role may sign and read the public key"
  }

  assert {
    condition = anytrue([
      for s in jsondecode(aws_kms_key.signing.policy).Statement :
      s.Effect == "Deny" && s.Principal.AWS == "*" && s.Action == "kms:Sign" && try(s.Condition.ArnNotEquals["aws:PrincipalArn"], "") == "arn:aws:iam::123456789012:role/ztml-controller"
    ])
    error_message = "kms:Sign is denied to every principal but the controller's role"
  }

  assert {
    condition     = output.signing_key_arn == "arn:aws:kms:eu-west-1:123456789012:key/99999999-8888-7777-6666-555555555555" && output.signing_key_uri == "awskms:///arn:aws:kms:eu-west-1:123456789012:key/99999999-8888-7777-6666-555555555555"
    error_message = "the outputs name the signing key (ARN and awskms:/// URI)"
  }

  assert {
    condition     = aws_kms_alias.signing.name == "alias/ztml-signing"
    error_message = "the signing key has its own alias"
  }
}
