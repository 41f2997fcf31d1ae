variable "region" {
  description = "AWS region. p3.8xlarge (4xV100) is offered in us-east-1, us-west-2, eu-west-1 and a few more."
  type        = string
  default     = "us-east-1"
}

variable "name" {
  description = "Cluster name and prefix of every resource."
  type        = string
  default     = "distilqa"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,30}$", var.name))
    error_message = "name must be 3-31 lowercase letters, digits or dashes, starting with a letter."
  }
}

variable "kubernetes_version" {
  description = "EKS Kubernetes version."
  type        = string
  default     = "1.34"
}

variable "vpc_cidr" {
  description = "CIDR of the cluster VPC."
  type        = string
  default     = "10.40.0.0/16"
}

variable "availability_zones" {
  description = "Two or three AZs that offer the GPU instance type (check with `aws ec2 describe-instance-type-offerings`)."
  type        = list(string)
  default     = ["us-east-1a", "us-east-1b"]
}

variable "api_allowed_cidrs" {
  description = "CIDRs allowed to reach the public Kubernetes API endpoint (your office / VPN). Never 0.0.0.0/0."
  type        = list(string)

  validation {
    condition     = length(var.api_allowed_cidrs) > 0 && !contains(var.api_allowed_cidrs, "0.0.0.0/0")
    error_message = "api_allowed_cidrs must list at least one CIDR and must not be 0.0.0.0/0."
  }
}

variable "gpu_type" {
  description = "GPU of the training node pool: v100 (the seed recipe: p3.8xlarge, 4xV100), a100, h100 or l4."
  type        = string
  default     = "v100"

  validation {
    condition     = contains(["v100", "a100", "h100", "l4"], var.gpu_type)
    error_message = "gpu_type must be one of v100, a100, h100, l4."
  }
}

variable "gpu_instance_type" {
  description = "Override the instance type picked for gpu_type (empty: p3.8xlarge / p4d.24xlarge / p5.48xlarge / g6.12xlarge)."
  type        = string
  default     = ""
}

variable "gpu_nodes_max" {
  description = "Most GPU nodes the pool scales to. The pool scales from zero: it costs nothing while no training pod waits."
  type        = number
  default     = 2

  validation {
    condition     = var.gpu_nodes_max >= 1 && var.gpu_nodes_max <= 16
    error_message = "gpu_nodes_max must be between 1 and 16."
  }
}

variable "gpu_capacity_type" {
  description = "ON_DEMAND or SPOT for the GPU pool (training resumes from checkpoints after a spot reclaim)."
  type        = string
  default     = "ON_DEMAND"

  validation {
    condition     = contains(["ON_DEMAND", "SPOT"], var.gpu_capacity_type)
    error_message = "gpu_capacity_type must be ON_DEMAND or SPOT."
  }
}

variable "system_instance_type" {
  description = "Instance type of the CPU pool (KFP, MLflow, KServe predictors, CPU pipeline steps)."
  type        = string
  default     = "m6i.2xlarge"
}

variable "system_nodes" {
  description = "Min, desired and max size of the CPU pool."
  type        = object({ min = number, desired = number, max = number })
  default     = { min = 2, desired = 2, max = 6 }
}

variable "nvidia_driver_version" {
  description = "Driver the GPU Operator installs; R580 is the last branch supporting V100."
  type        = string
  default     = "580.95.05"
}

variable "artifact_retention_days" {
  description = "Days before pipeline-root intermediates (augmented shards, checkpoints, logits caches) expire."
  type        = number
  default     = 30
}

variable "noncurrent_version_days" {
  description = "Days a replaced object version of the MLflow and model buckets is kept (undo window)."
  type        = number
  default     = 90
}

variable "tags" {
  description = "Extra tags on every resource."
  type        = map(string)
  default     = {}
}

variable "gpu_ami_release_version" {
  description = "EKS NVIDIA AMI release_version of the GPU pool. Required for V100: choose one whose driver is R580."
  type        = string
  default     = ""
}

variable "cluster_autoscaler_chart_version" {
  description = "Pinned cluster-autoscaler Helm chart version (its app version should match kubernetes_version)."
  type        = string
  default     = "9.50.1"
}
