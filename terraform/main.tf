data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

locals {
  account_id    = data.aws_caller_identity.current.account_id
  partition     = data.aws_partition.current.partition
  cluster_name  = var.name
  bucket_name   = coalesce(var.artifact_bucket_name, "${var.name}-mlflow-artifacts-${local.account_id}")
  zones         = var.availability_zones
  private_cidrs = [for i, _ in local.zones : cidrsubnet(var.vpc_cidr, 4, i)]
  public_cidrs  = [for i, _ in local.zones : cidrsubnet(var.vpc_cidr, 8, 240 + i)]
  oidc_issuer   = replace(aws_eks_cluster.this.identity[0].oidc[0].issuer, "https://", "")
}

# One customer-managed key for the stack: EKS secrets, ECR, S3 artifacts and CloudWatch logs.
resource "aws_kms_key" "this" {
  description             = "${var.name}: EKS secrets, ECR images, MLflow artifacts, logs"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "AccountAdministers"
        Effect    = "Allow"
        Principal = { AWS = "arn:${local.partition}:iam::${local.account_id}:root" }
        Action    = "kms:*"
        Resource  = "*"
      },
      {
        Sid       = "CloudWatchLogsEncrypt"
        Effect    = "Allow"
        Principal = { Service = "logs.${var.region}.amazonaws.com" }
        Action    = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
        Resource  = "*"
        Condition = {
          ArnLike = { "kms:EncryptionContext:aws:logs:arn" = "arn:${local.partition}:logs:${var.region}:${local.account_id}:log-group:*" }
        }
      },
    ]
  })
}

resource "aws_kms_alias" "this" {
  name          = "alias/${var.name}"
  target_key_id = aws_kms_key.this.key_id
}
