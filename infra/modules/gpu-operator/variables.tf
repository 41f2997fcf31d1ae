variable "namespace" {
  description = "Namespace of the GPU Operator."
  type        = string
  default     = "gpu-operator"
}

variable "chart_version" {
  description = "Pinned gpu-operator Helm chart version; check NVIDIA's support matrix for the driver below."
  type        = string
  default     = "v25.10.0"
}

variable "install_driver" {
  description = "Let the operator install the NVIDIA driver (needed for V100 on node images whose driver dropped Volta)."
  type        = bool
  default     = true
}

variable "install_toolkit" {
  description = "Let the operator install the NVIDIA container toolkit (false when the node image has it, e.g. the EKS NVIDIA AMI)."
  type        = bool
  default     = true
}

variable "driver_version" {
  description = "NVIDIA driver version the operator installs. Must stay on the R580 branch while V100 pools exist."
  type        = string
  default     = "580.95.05"

  validation {
    condition     = can(regex("^[0-9]{3}\\.[0-9]+(\\.[0-9]+)?$", var.driver_version))
    error_message = "driver_version must look like 580.95.05."
  }
}

variable "node_selector" {
  description = "Labels selecting the GPU nodes the operator's daemonsets run on."
  type        = map(string)
  default     = {}
}

variable "service_monitor" {
  description = "Create a Prometheus ServiceMonitor for DCGM metrics (needs the Prometheus Operator CRDs)."
  type        = bool
  default     = false
}
