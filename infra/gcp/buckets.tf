# GCS buckets: data, pipeline root, MLflow artifacts, models. Uniform access, no public access,
# versioning everywhere, lifecycle on intermediates and on replaced versions.

locals {
  buckets = {
    data          = { noncurrent_days = 90, expire_days = 0 }
    pipeline-root = { noncurrent_days = 7, expire_days = var.artifact_retention_days }
    mlflow        = { noncurrent_days = 90, expire_days = 0 }
    models        = { noncurrent_days = 90, expire_days = 0 }
  }
}

resource "google_storage_bucket" "this" {
  for_each                    = local.buckets
  name                        = "${var.project}-${var.name}-${each.key}"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  labels                      = merge({ project = "distilqa" }, var.labels)

  versioning {
    enabled = true
  }

  logging {
    log_bucket = "${var.project}-${var.name}-logs"
  }

  dynamic "lifecycle_rule" {
    for_each = each.value.expire_days > 0 ? [each.value.expire_days] : []
    content {
      condition {
        age = lifecycle_rule.value
      }
      action {
        type = "Delete"
      }
    }
  }

  dynamic "lifecycle_rule" {
    for_each = [each.value.noncurrent_days]
    content {
      condition {
        days_since_noncurrent_time = lifecycle_rule.value
      }
      action {
        type = "Delete"
      }
    }
  }

  depends_on = [google_storage_bucket.logs]
}

resource "google_storage_bucket" "logs" {
  #checkov:skip=CKV_GCP_62:the access-log bucket does not log access to itself
  name                        = "${var.project}-${var.name}-logs"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  labels                      = merge({ project = "distilqa" }, var.labels)

  versioning {
    enabled = true
  }

  lifecycle_rule {
    condition {
      age = 365
    }
    action {
      type = "Delete"
    }
  }
}
