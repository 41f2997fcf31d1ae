variable "project" {
  description = "GCP project id."
  type        = string
}

variable "region" {
  description = "Region of the cluster; the GPU pool's zones must offer the accelerator (gcloud compute accelerator-types list)."
  type        = string
  default     = "us-central1"
}

variable "gpu_zones" {
  description = "Zones of the GPU node pool."
  type        = list(string)
  default     = ["us-central1-a", "us-central1-b"]
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

variable "master_authorized_cidrs" {
  description = "CIDRs allowed to reach the Kubernetes API (your office / VPN)."
  type        = list(string)

  validation {
    condition     = length(var.master_authorized_cidrs) > 0 && !contains(var.master_authorized_cidrs, "0.0.0.0/0")
    error_message = "master_authorized_cidrs must list at least one CIDR and must not be 0.0.0.0/0."
  }
}

variable "gpu_type" {
  description = "GPU of the training pool: v100 (the seed recipe: n1-standard-32 + 4 x nvidia-tesla-v100), a100, h100 or l4."
  type        = string
  default     = "v100"

  validation {
    condition     = contains(["v100", "a100", "h100", "l4"], var.gpu_type)
    error_message = "gpu_type must be one of v100, a100, h100, l4."
  }
}

variable "gpu_count" {
  description = "GPUs per node (0: the type's default: 4 for v100 and l4, 4 for a100 on a2-highgpu-4g, 8 for h100)."
  type        = number
  default     = 0

  validation {
    condition     = contains([0, 1, 2, 4, 8], var.gpu_count)
    error_message = "gpu_count must be 0 (default), 1, 2, 4 or 8."
  }
}

variable "gpu_nodes_max" {
  description = "Most GPU nodes the pool autoscales to (it scales from zero)."
  type        = number
  default     = 2
}

variable "gpu_spot" {
  description = "Use Spot VMs for the GPU pool (training resumes from checkpoints after a preemption)."
  type        = bool
  default     = false
}

variable "nvidia_driver_version" {
  description = "Driver the GPU Operator installs on the GPU pool; R580 is the last branch supporting V100."
  type        = string
  default     = "580.95.05"
}

variable "artifact_retention_days" {
  description = "Days before pipeline-root intermediates expire."
  type        = number
  default     = 30
}

variable "labels" {
  description = "Extra labels on every resource that takes labels."
  type        = map(string)
  default     = {}
}
