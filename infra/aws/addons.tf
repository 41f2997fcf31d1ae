# In-cluster add-ons Terraform owns: the cluster autoscaler (GPU pool from zero) and the GPU Operator
# as device plugin + DCGM exporter (the NVIDIA AMI already carries the R580 driver and toolkit).
# KFP, MLflow, the S3 store and KServe are applied from manifests/ (docs/runbook.md).

resource "helm_release" "cluster_autoscaler" {
  name       = "cluster-autoscaler"
  namespace  = "kube-system"
  repository = "https://kubernetes.github.io/autoscaler"
  chart      = "cluster-autoscaler"
  version    = var.cluster_autoscaler_chart_version
  atomic     = true

  values = [yamlencode({
    cloudProvider = "aws"
    awsRegion     = var.region
    autoDiscovery = { clusterName = aws_eks_cluster.this.name }
    rbac = {
      serviceAccount = {
        name        = "cluster-autoscaler"
        annotations = { "eks.amazonaws.com/role-arn" = aws_iam_role.autoscaler.arn }
      }
    }
    extraArgs = {
      "balance-similar-node-groups" = true
      "expander"                    = "least-waste"
      # give an idle 4xV100 node back quickly: it is the most expensive thing in the account
      "scale-down-unneeded-time" = "10m"
    }
    nodeSelector = { "distilqa.io/pool" = "system" }
  })]

  depends_on = [aws_eks_node_group.system]
}

module "gpu_operator" {
  source          = "../modules/gpu-operator"
  install_driver  = false
  install_toolkit = false
  driver_version  = var.nvidia_driver_version
  node_selector   = { "nvidia.com/gpu.present" = "true" }

  depends_on = [aws_eks_node_group.system]
}
