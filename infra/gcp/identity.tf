# Workload Identity: each workload's Kubernetes service account acts as its own Google service
# account, scoped to its buckets; no key files. Annotate the ServiceAccounts with
# iam.gke.io/gcp-service-account = outputs.workload_identity_emails[workload].

locals {
  workloads = {
    kfp = {
      service_accounts = ["kubeflow/pipeline-runner", "kubeflow/ml-pipeline", "kubeflow/ml-pipeline-ui"]
      read_write       = ["pipeline-root", "models"]
      read_only        = ["data"]
    }
    mlflow = {
      service_accounts = ["mlflow/mlflow"]
      read_write       = ["mlflow"]
      read_only        = []
    }
    kserve = {
      service_accounts = ["distilqa/distilqa-serving"]
      read_write       = []
      read_only        = ["models", "mlflow"]
    }
  }
  bindings = merge(
    { for pair in flatten([for w, v in local.workloads : [for b in v.read_write : { key = "${w}-${b}-rw", w = w, b = b, role = "roles/storage.objectUser" }]]) : pair.key => pair },
    { for pair in flatten([for w, v in local.workloads : [for b in v.read_only : { key = "${w}-${b}-ro", w = w, b = b, role = "roles/storage.objectViewer" }]]) : pair.key => pair },
  )
  ksa_members = merge([for w, v in local.workloads : { for sa in v.service_accounts : "${w}:${sa}" => { w = w, sa = sa } }]...)
}

resource "google_service_account" "workload" {
  for_each     = local.workloads
  account_id   = "${var.name}-${each.key}"
  display_name = "distilqa ${each.key} (Workload Identity)"
}

resource "google_storage_bucket_iam_member" "workload" {
  for_each = local.bindings
  bucket   = google_storage_bucket.this[each.value.b].name
  role     = each.value.role
  member   = "serviceAccount:${google_service_account.workload[each.value.w].email}"
}

resource "google_service_account_iam_member" "workload_identity" {
  for_each           = local.ksa_members
  service_account_id = google_service_account.workload[each.value.w].name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${var.project}.svc.id.goog[${each.value.sa}]"
}
