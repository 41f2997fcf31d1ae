output "namespace" {
  description = "Namespace the GPU Operator runs in."
  value       = helm_release.gpu_operator.namespace
}

output "driver_version" {
  description = "Driver version the GPU nodes get (null when the node image provides it)."
  value       = var.install_driver ? var.driver_version : null
}
