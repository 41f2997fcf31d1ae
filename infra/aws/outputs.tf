output "cluster_name" {
  description = "EKS cluster name (aws eks update-kubeconfig --name ...)."
  value       = aws_eks_cluster.this.name
}

output "buckets" {
  description = "Bucket names by role; the manifests and profiles take these (s3://NAME/...)."
  value       = { for k, b in aws_s3_bucket.this : k => b.bucket }
}

output "irsa_role_arns" {
  description = "Role ARNs for the eks.amazonaws.com/role-arn annotation of each workload's ServiceAccount."
  value       = { for k, r in aws_iam_role.irsa : k => r.arn }
}

output "gpu_node_selector" {
  description = "Value for resources.gpu_node_selector in the production profile."
  value       = "distilqa.io/pool=${local.gpu_pool_label}"
}

output "gpus_per_node" {
  description = "GPUs per node of the GPU pool: resources.gpus in the production profile."
  value       = local.gpu_instance[var.gpu_type].gpus
}
