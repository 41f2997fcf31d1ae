# NVIDIA GPU Operator: device plugin, container toolkit, DCGM exporter and (optionally) the driver.
#
# Why a pinned R580 driver: R580 is the last driver branch that supports Volta (V100, sm_70). Node
# images that ship a newer branch cannot run the 4xV100 pools of the production profile, so for
# V100 the operator installs the driver itself on a plain node image. For A100/H100/L4 either path
# works; set install_driver = false when the node image already carries a driver.

resource "helm_release" "gpu_operator" {
  name             = "gpu-operator"
  namespace        = var.namespace
  create_namespace = true
  repository       = "https://helm.ngc.nvidia.com/nvidia"
  chart            = "gpu-operator"
  version          = var.chart_version
  atomic           = true
  timeout          = 900

  values = [yamlencode({
    driver = {
      enabled = var.install_driver
      version = var.driver_version
    }
    toolkit      = { enabled = var.install_toolkit }
    devicePlugin = { enabled = true }
    dcgmExporter = { enabled = true, serviceMonitor = { enabled = var.service_monitor } }
    # the GPU pool is tainted nvidia.com/gpu:NoSchedule; the operator's daemonsets must tolerate it
    daemonsets = {
      tolerations  = [{ key = "nvidia.com/gpu", operator = "Exists", effect = "NoSchedule" }]
      nodeSelector = var.node_selector
    }
    node-feature-discovery = {
      worker = { tolerations = [{ key = "nvidia.com/gpu", operator = "Exists", effect = "NoSchedule" }] }
    }
  })]
}
