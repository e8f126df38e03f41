# Offline tests of the stack with a mocked AWS provider: `terraform test` (no credentials,
# no network). They check what the stack promises: private nodes, encrypted everything,
# the GPU node group's taint and labels, least-privilege IRSA trust, and input validation.

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
      endpoint              = "https://EXAMPLE.gr7.eu-west-1.eks.amazonaws.com"
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

run "defaults" {
  command = apply

  assert {
    condition     = length(aws_subnet.private) == 3 && alltrue([for s in aws_subnet.public : s.map_public_ip_on_launch == false])
    error_message = "three private subnets, and no public IPs on launch anywhere"
  }

  assert {
    condition     = aws_eks_cluster.this.vpc_config[0].endpoint_public_access == false && aws_eks_cluster.this.vpc_config[0].endpoint_private_access == true
    error_message = "the API endpoint is private by default"
  }

  assert {
    condition     = toset(aws_eks_cluster.this.enabled_cluster_log_types) == toset(["api", "audit", "authenticator", "controllerManager", "scheduler"])
    error_message = "every control-plane log type is enabled"
  }

  assert {
    condition     = aws_eks_cluster.this.encryption_config[0].resources == toset(["secrets"]) && aws_eks_cluster.this.version == "1.33"
    error_message = "secrets are envelope-encrypted"
  }

  assert {
    condition     = aws_ecr_repository.models.image_tag_mutability == "IMMUTABLE" && aws_ecr_repository.models.image_scanning_configuration[0].scan_on_push && aws_ecr_repository.models.encryption_configuration[0].encryption_type == "KMS"
    error_message = "ECR: immutable tags, scan on push, KMS"
  }

  assert {
    condition     = aws_s3_bucket_versioning.artifacts.versioning_configuration[0].status == "Enabled"
    error_message = "the artifact bucket is versioned"
  }

  assert {
    condition     = one(aws_s3_bucket_server_side_encryption_configuration.artifacts.rule).apply_server_side_encryption_by_default[0].sse_algorithm == "aws:kms"
    error_message = "the artifact bucket is KMS-encrypted"
  }

  assert {
    condition     = aws_s3_bucket_public_access_block.artifacts.block_public_acls && aws_s3_bucket_public_access_block.artifacts.block_public_policy && aws_s3_bucket_public_access_block.artifacts.ignore_public_acls && aws_s3_bucket_public_access_block.artifacts.restrict_public_buckets
    error_message = "public access is blocked"
  }

  assert {
    condition     = jsondecode(aws_s3_bucket_policy.artifacts.policy).Statement[0].Condition.Bool["aws:SecureTransport"] == "false"
    error_message = "the bucket policy denies plain HTTP"
  }

  assert {
    condition     = aws_eks_node_group.this["gpu"].instance_types == tolist(["g4dn.xlarge"]) && aws_eks_node_group.this["gpu"].labels["ztml.io/node-group"] == "gpu"
    error_message = "the GPU node group runs g4dn.xlarge and is labelled"
  }

  assert {
    condition     = one(aws_eks_node_group.this["gpu"].taint).key == "nvidia.com/gpu" && one(aws_eks_node_group.this["gpu"].taint).effect == "NO_SCHEDULE"
    error_message = "the GPU node group is tainted nvidia.com/gpu=true:NoSchedule"
  }

  assert {
    condition     = length(aws_eks_node_group.this["system"].taint) == 0 && aws_eks_node_group.this["system"].scaling_config[0].min_size == 2
    error_message = "the system node group is untainted"
  }

  assert {
    condition     = alltrue([for lt in aws_launch_template.node : lt.metadata_options[0].http_tokens == "required" && lt.block_device_mappings[0].ebs[0].encrypted == "true"])
    error_message = "nodes use IMDSv2 and encrypted root volumes"
  }

  assert {
    condition     = jsondecode(aws_iam_role.inference.assume_role_policy).Statement[0].Condition.StringLike["oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLE:sub"] == "system:serviceaccount:ztml-models:*"
    error_message = "only service accounts of the models namespace assume the inference role"
  }

  assert {
    condition     = jsondecode(aws_iam_role.controller.assume_role_policy).Statement[0].Condition.StringEquals["oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLE:sub"] == "system:serviceaccount:ztml-system:ztml-ztml-controller"
    error_message = "only the controller's service account assumes the controller role"
  }

  assert {
    condition     = contains(jsondecode(aws_iam_role_policy.inference.policy).Statement[1].Action, "s3:GetObject") && jsondecode(aws_iam_role_policy.inference.policy).Statement[1].Resource == "arn:aws:s3:::ztml-mlflow-artifacts-123456789012/*"
    error_message = "inference pods read model artifacts"
  }

  assert {
    condition     = contains(jsondecode(aws_iam_role_policy.controller.policy).Statement[0].Action, "ecr:BatchGetImage") && jsondecode(aws_iam_role_policy.controller.policy).Statement[0].Resource == "arn:aws:ecr:eu-west-1:123456789012:repository/ztml-models"
    error_message = "the controller pulls from the models repository only"
  }

  assert {
    condition     = output.ecr_registry == "123456789012.dkr.ecr.eu-west-1.amazonaws.com" && output.artifact_bucket == "ztml-mlflow-artifacts-123456789012"
    error_message = "outputs name the registry and the bucket"
  }

  assert {
    condition     = output.gpu_node_selector["ztml.io/node-group"] == "gpu"
    error_message = "the GPU node selector matches the chart's default"
  }
}

run "public_endpoint_needs_cidrs" {
  command = plan
  variables {
    endpoint_public_access = true
  }
  expect_failures = [aws_eks_cluster.this]
}

run "public_endpoint_with_cidrs" {
  command = plan
  variables {
    endpoint_public_access = true
    public_access_cidrs    = ["203.0.113.0/24"]
  }
  assert {
    condition     = aws_eks_cluster.this.vpc_config[0].public_access_cidrs == toset(["203.0.113.0/24"])
    error_message = "the public endpoint is restricted to the given CIDRs"
  }
}

run "rejects_the_whole_internet" {
  command = plan
  variables {
    public_access_cidrs = ["0.0.0.0/0"]
  }
  expect_failures = [var.public_access_cidrs]
}

run "rejects_old_kubernetes" {
  command = plan
  variables {
    kubernetes_version = "1.24"
  }
  expect_failures = [var.kubernetes_version]
}

run "rejects_non_gpu_instances_for_the_gpu_group" {
  command = plan
  variables {
    gpu_node_group = { instance_types = ["m5.large"], min_size = 0, desired_size = 0, max_size = 2 }
  }
  expect_failures = [var.gpu_node_group]
}

run "rejects_a_bad_name" {
  command = plan
  variables {
    name = "Ztml_Prod"
  }
  expect_failures = [var.name]
}

run "rejects_a_single_zone" {
  command = plan
  variables {
    availability_zones = ["eu-west-1a"]
  }
  expect_failures = [var.availability_zones]
}
