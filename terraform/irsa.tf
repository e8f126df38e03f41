# IRSA roles: pods assume them through their service account's eks.amazonaws.com/role-arn
# annotation (ztml-inference: serviceAccount.roleArn; ztml-controller: serviceAccount.roleArn).
locals {
  oidc_provider_arn = aws_iam_openid_connect_provider.eks.arn
}

# Inference pods: read model artifacts. Every service account in the models namespace (one per
# release, named after the deployment) may assume it, and nothing outside that namespace.
resource "aws_iam_role" "inference" {
  name = "${var.name}-inference"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Federated = local.oidc_provider_arn }
      Action    = "sts:AssumeRoleWithWebIdentity"
      Condition = {
        StringEquals = { "${local.oidc_issuer}:aud" = "sts.amazonaws.com" }
        StringLike   = { "${local.oidc_issuer}:sub" = "system:serviceaccount:${var.models_namespace}:*" }
      }
    }]
  })
}

resource "aws_iam_role_policy" "inference" {
  name = "read-model-artifacts"
  role = aws_iam_role.inference.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid      = "ListArtifacts"
        Effect   = "Allow"
        Action   = ["s3:ListBucket"]
        Resource = aws_s3_bucket.artifacts.arn
      },
      {
        Sid      = "ReadArtifacts"
        Effect   = "Allow"
        Action   = ["s3:GetObject", "s3:GetObjectVersion"]
        Resource = "${aws_s3_bucket.artifacts.arn}/*"
      },
      {
        Sid      = "DecryptArtifacts"
        Effect   = "Allow"
        Action   = ["kms:Decrypt"]
        Resource = aws_kms_key.this.arn
      },
    ]
  })
}

# The controller: find and pull serving images in the models repository.
resource "aws_iam_role" "controller" {
  name = "${var.name}-controller"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Federated = local.oidc_provider_arn }
      Action    = "sts:AssumeRoleWithWebIdentity"
      Condition = {
        StringEquals = {
          "${local.oidc_issuer}:aud" = "sts.amazonaws.com"
          "${local.oidc_issuer}:sub" = "system:serviceaccount:${var.controller_namespace}:${var.controller_service_account}"
        }
      }
    }]
  })
}

resource "aws_iam_role_policy" "controller" {
  name = "ecr-describe-pull"
  role = aws_iam_role.controller.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid    = "DescribeAndPullModels"
        Effect = "Allow"
        Action = [
          "ecr:DescribeRepositories",
          "ecr:DescribeImages",
          "ecr:ListImages",
          "ecr:BatchGetImage",
          "ecr:BatchCheckLayerAvailability",
          "ecr:GetDownloadUrlForLayer",
          "ecr:DescribeImageScanFindings",
        ]
        Resource = aws_ecr_repository.models.arn
      },
      {
        # GetAuthorizationToken has no resource-level permissions: AWS only accepts "*".
        Sid      = "RegistryLogin"
        Effect   = "Allow"
        Action   = ["ecr:GetAuthorizationToken"]
        Resource = "*"
      },
      {
        Sid      = "DecryptImages"
        Effect   = "Allow"
        Action   = ["kms:Decrypt"]
        Resource = aws_kms_key.this.arn
      },
    ]
  })
}
