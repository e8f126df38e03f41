# The key ztml signs with (supply chain): serving images in the sigstore/cosign format and model
# files (OpenSSF model-signing). Asymmetric, so every verifier (ztml, serving, Kyverno, sigstore
# policy-controller, `cosign verify --key awskms:///ARN`) needs only the public key, and the
# private half never leaves KMS. Configure ztml with the `signing_key_uri` output.
#
# Who may sign is decided here, in the key policy, not in IAM: the account's administrators
# manage the key but are not delegated kms:Sign, an explicit Deny refuses kms:Sign to every
# principal but the controller's IRSA role (so no IAM policy elsewhere can grant it), and the
# controller may only sign (ECDSA_SHA_256) and read the public key. AWS does not rotate
# asymmetric keys; rotate by creating a new key and re-signing (docs/images.md).
locals {
  signing_admin_actions = [
    "kms:Create*", "kms:Describe*", "kms:Enable*", "kms:List*", "kms:Put*", "kms:Update*",
    "kms:Revoke*", "kms:Disable*", "kms:GetKeyPolicy", "kms:GetKeyRotationStatus",
    "kms:GetPublicKey", "kms:Delete*", "kms:TagResource", "kms:UntagResource",
    "kms:ScheduleKeyDeletion", "kms:CancelKeyDeletion",
  ]
}

resource "aws_kms_key" "signing" {
  description              = "${var.name}: signs serving images and model files (ztml)"
  customer_master_key_spec = "ECC_NIST_P256"
  key_usage                = "SIGN_VERIFY"
  deletion_window_in_days  = 30
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "AccountAdministersWithoutSigning"
        Effect    = "Allow"
        Principal = { AWS = "arn:${local.partition}:iam::${local.account_id}:root" }
        Action    = local.signing_admin_actions
        Resource  = "*"
      },
      {
        Sid       = "ControllerSigns"
        Effect    = "Allow"
        Principal = { AWS = aws_iam_role.controller.arn }
        Action    = ["kms:Sign", "kms:GetPublicKey", "kms:DescribeKey"]
        Resource  = "*"
      },
      {
        Sid       = "OnlyTheControllerSigns"
        Effect    = "Deny"
        Principal = { AWS = "*" }
        Action    = "kms:Sign"
        Resource  = "*"
        Condition = {
          ArnNotEquals = { "aws:PrincipalArn" = aws_iam_role.controller.arn }
        }
      },
    ]
  })
}

resource "aws_kms_alias" "signing" {
  name          = "alias/${var.name}-signing"
  target_key_id = aws_kms_key.signing.key_id
}
