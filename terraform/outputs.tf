output "cluster_name" {
  description = "EKS cluster name (aws eks update-kubeconfig --name ...)."
  value       = aws_eks_cluster.this.name
}

output "cluster_endpoint" {
  description = "EKS API endpoint."
  value       = aws_eks_cluster.this.endpoint
}

output "cluster_certificate_authority" {
  description = "Base64 CA certificate of the API endpoint."
  value       = aws_eks_cluster.this.certificate_authority[0].data
}

output "oidc_provider_arn" {
  description = "IAM OIDC provider of the cluster (IRSA)."
  value       = aws_iam_openid_connect_provider.eks.arn
}

output "vpc_id" {
  description = "VPC id."
  value       = aws_vpc.this.id
}

output "private_subnet_ids" {
  description = "Private subnets (nodes)."
  value       = aws_subnet.private[*].id
}

output "ecr_repository_url" {
  description = "Where ztml pushes serving images: build.registry + build.repository in ztml.yaml."
  value       = aws_ecr_repository.models.repository_url
}

output "ecr_registry" {
  description = "The registry host, for kubernetes.approved_registries in ztml.yaml."
  value       = split("/", aws_ecr_repository.models.repository_url)[0]
}

output "artifact_bucket" {
  description = "MLflow artifact bucket (mlflow server --artifacts-destination s3://...)."
  value       = aws_s3_bucket.artifacts.bucket
}

output "kms_key_arn" {
  description = "The stack's KMS key."
  value       = aws_kms_key.this.arn
}

output "inference_role_arn" {
  description = "IRSA role for inference pods: ztml-inference serviceAccount.roleArn."
  value       = aws_iam_role.inference.arn
}

output "controller_role_arn" {
  description = "IRSA role for the controller: ztml-controller serviceAccount.roleArn."
  value       = aws_iam_role.controller.arn
}

output "gpu_node_selector" {
  description = "Node labels of the GPU node group (the chart's gpu.nodeSelector default)."
  value       = local.node_groups.gpu.labels
}

output "signing_key_arn" {
  description = "The ECC_NIST_P256 signing key (SIGN_VERIFY); only the controller role may sign with it."
  value       = aws_kms_key.signing.arn
}

output "signing_key_uri" {
  description = "The signing key as ztml and cosign name it (awskms:///ARN); its public key: aws kms get-public-key."
  value       = "awskms:///${aws_kms_key.signing.arn}"
}
