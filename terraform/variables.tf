variable "name" {
  description = "Name of the stack: prefixes the cluster, VPC, repository, bucket and roles."
  type        = string
  default     = "ztml"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.name))
    error_message = "name must be 3-32 characters of lowercase letters, digits and '-', starting with a letter."
  }
}

variable "region" {
  description = "AWS region, e.g. eu-west-1."
  type        = string
  default     = "eu-west-1"

  validation {
    condition     = can(regex("^[a-z]{2}(-gov)?-[a-z]+-[0-9]$", var.region))
    error_message = "region must look like eu-west-1."
  }
}

variable "availability_zones" {
  description = "Availability zones for the subnets (at least two; three for production)."
  type        = list(string)
  default     = ["eu-west-1a", "eu-west-1b", "eu-west-1c"]

  validation {
    condition     = length(var.availability_zones) >= 2 && length(var.availability_zones) == length(distinct(var.availability_zones))
    error_message = "availability_zones needs at least two distinct zones."
  }
}

variable "vpc_cidr" {
  description = "CIDR of the VPC; split into one private and one public subnet per zone."
  type        = string
  default     = "10.40.0.0/16"

  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0)) && tonumber(split("/", var.vpc_cidr)[1]) <= 20
    error_message = "vpc_cidr must be a valid IPv4 CIDR of /20 or larger."
  }
}

variable "kubernetes_version" {
  description = "EKS Kubernetes version."
  type        = string
  default     = "1.33"

  validation {
    condition     = can(regex("^1\\.(3[0-9])$", var.kubernetes_version))
    error_message = "kubernetes_version must be 1.30 or newer, as MAJOR.MINOR."
  }
}

variable "endpoint_public_access" {
  description = "Expose the EKS API endpoint publicly (restricted to public_access_cidrs). Off: reach it from inside the VPC (VPN, bastion, CI runners in the VPC)."
  type        = bool
  default     = false
}

variable "public_access_cidrs" {
  description = "CIDRs allowed to reach a public API endpoint."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.public_access_cidrs : can(cidrhost(c, 0)) && c != "0.0.0.0/0"])
    error_message = "public_access_cidrs must be valid CIDRs and never 0.0.0.0/0."
  }
}

variable "system_node_group" {
  description = "The system node group (controllers, ingress, monitoring, CPU models)."
  type = object({
    instance_types = list(string)
    min_size       = number
    desired_size   = number
    max_size       = number
    disk_size_gib  = optional(number, 50)
  })
  default = {
    instance_types = ["m6i.large"]
    min_size       = 2
    desired_size   = 3
    max_size       = 6
  }

  validation {
    condition     = var.system_node_group.min_size >= 1 && var.system_node_group.min_size <= var.system_node_group.desired_size && var.system_node_group.desired_size <= var.system_node_group.max_size
    error_message = "system_node_group needs 1 <= min_size <= desired_size <= max_size."
  }
}

variable "gpu_node_group" {
  description = "The GPU node group (tainted nvidia.com/gpu=true:NoSchedule, labelled ztml.io/node-group=gpu). min_size 0 lets it scale to zero."
  type = object({
    instance_types = list(string)
    min_size       = number
    desired_size   = number
    max_size       = number
    disk_size_gib  = optional(number, 100)
    ami_type       = optional(string, "AL2023_x86_64_NVIDIA")
  })
  default = {
    instance_types = ["g4dn.xlarge"]
    min_size       = 0
    desired_size   = 1
    max_size       = 4
  }

  validation {
    condition     = var.gpu_node_group.min_size >= 0 && var.gpu_node_group.min_size <= var.gpu_node_group.desired_size && var.gpu_node_group.desired_size <= var.gpu_node_group.max_size && var.gpu_node_group.max_size >= 1
    error_message = "gpu_node_group needs 0 <= min_size <= desired_size <= max_size and max_size >= 1."
  }

  validation {
    condition     = alltrue([for t in var.gpu_node_group.instance_types : can(regex("^(g4dn|g5|g6|g6e|p3|p4d|p5)\\.", t))])
    error_message = "gpu_node_group.instance_types must be NVIDIA GPU instance types (g4dn, g5, g6, g6e, p3, p4d, p5)."
  }
}

variable "models_namespace" {
  description = "Namespace the inference releases run in (every service account there may read model artifacts)."
  type        = string
  default     = "ztml-models"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", var.models_namespace)) && length(var.models_namespace) <= 63
    error_message = "models_namespace must be a DNS-1123 label."
  }
}

variable "controller_namespace" {
  description = "Namespace of the ztml controller."
  type        = string
  default     = "ztml-system"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", var.controller_namespace)) && length(var.controller_namespace) <= 63
    error_message = "controller_namespace must be a DNS-1123 label."
  }
}

variable "controller_service_account" {
  description = "Service account of the controller (the ztml-controller chart names it <release>-ztml-controller)."
  type        = string
  default     = "ztml-ztml-controller"
}

variable "artifact_bucket_name" {
  description = "Name of the MLflow artifact bucket (default: <name>-mlflow-artifacts-<account id>)."
  type        = string
  default     = null

  validation {
    condition     = var.artifact_bucket_name == null || can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.artifact_bucket_name))
    error_message = "artifact_bucket_name must be a valid S3 bucket name."
  }
}

variable "log_retention_days" {
  description = "Retention of the control-plane and VPC flow logs."
  type        = number
  default     = 90

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a value CloudWatch Logs accepts (e.g. 30, 90, 365)."
  }
}

variable "tags" {
  description = "Extra tags on every resource."
  type        = map(string)
  default     = {}
}
