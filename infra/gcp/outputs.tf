output "cluster_name" {
  description = "GKE cluster name (gcloud container clusters get-credentials ...)."
  value       = google_container_cluster.this.name
}

output "buckets" {
  description = "Bucket names by role (gs://NAME/...)."
  value       = { for k, b in google_storage_bucket.this : k => b.name }
}

output "workload_identity_emails" {
  description = "Google service accounts for the iam.gke.io/gcp-service-account annotation of each workload."
  value       = { for k, sa in google_service_account.workload : k => sa.email }
}

output "gpu_node_selector" {
  description = "Value for resources.gpu_node_selector in the production profile."
  value       = "distilqa.io/pool=${local.gpu_pool_label}"
}

output "gpus_per_node" {
  description = "GPUs per node of the GPU pool: resources.gpus in the production profile."
  value       = local.gpu_count
}
