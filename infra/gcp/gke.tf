# GKE Standard: private nodes, authorised networks on the API, Workload Identity, Shielded nodes,
# application-layer Secrets encryption with a Cloud KMS key, and no default node pool.

locals {
  gpu = {
    v100 = { accelerator = "nvidia-tesla-v100", machine = "n1-standard-32", count = 4 }
    a100 = { accelerator = "nvidia-tesla-a100", machine = "a2-highgpu-4g", count = 4 }
    h100 = { accelerator = "nvidia-h100-80gb", machine = "a3-highgpu-8g", count = 8 }
    l4   = { accelerator = "nvidia-l4", machine = "g2-standard-48", count = 4 }
  }
  gpu_count      = var.gpu_count > 0 ? var.gpu_count : local.gpu[var.gpu_type].count
  gpu_pool_label = "gpu-${var.gpu_type}"
}

resource "google_kms_key_ring" "this" {
  name     = var.name
  location = var.region
}

resource "google_kms_crypto_key" "this" {
  name            = "${var.name}-gke-secrets"
  key_ring        = google_kms_key_ring.this.id
  rotation_period = "7776000s" # 90 days
  lifecycle {
    prevent_destroy = true
  }
}

data "google_project" "this" {}

# GKE's service agent encrypts and decrypts Secrets with the key
resource "google_kms_crypto_key_iam_member" "gke" {
  crypto_key_id = google_kms_crypto_key.this.id
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = "serviceAccount:service-${data.google_project.this.number}@container-engine-robot.iam.gserviceaccount.com"
}

resource "google_container_cluster" "this" {
  #checkov:skip=CKV_GCP_65:Google Groups for RBAC needs a Google Workspace domain; bind users or groups per organisation
  name     = var.name
  location = var.region

  network    = google_compute_network.this.id
  subnetwork = google_compute_subnetwork.this.id

  remove_default_node_pool = true
  initial_node_count       = 1
  # the short-lived default pool gets the hardened settings too
  node_config {
    workload_metadata_config {
      mode = "GKE_METADATA"
    }
    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }
  }
  deletion_protection = true

  release_channel {
    channel = "REGULAR"
  }

  ip_allocation_policy {
    cluster_secondary_range_name  = "pods"
    services_secondary_range_name = "services"
  }

  private_cluster_config {
    enable_private_nodes    = true
    enable_private_endpoint = false
    master_ipv4_cidr_block  = "172.16.0.0/28"
  }

  master_authorized_networks_config {
    dynamic "cidr_blocks" {
      for_each = var.master_authorized_cidrs
      content {
        cidr_block = cidr_blocks.value
      }
    }
  }

  workload_identity_config {
    workload_pool = "${var.project}.svc.id.goog"
  }

  database_encryption {
    state    = "ENCRYPTED"
    key_name = google_kms_crypto_key.this.id
  }

  network_policy {
    enabled = true
  }

  binary_authorization {
    evaluation_mode = "PROJECT_SINGLETON_POLICY_ENFORCE"
  }

  enable_shielded_nodes       = true
  enable_intranode_visibility = true

  logging_config {
    enable_components = ["SYSTEM_COMPONENTS", "WORKLOADS", "APISERVER"]
  }

  master_auth {
    client_certificate_config {
      issue_client_certificate = false
    }
  }

  resource_labels = merge({ project = "distilqa" }, var.labels)

  depends_on = [google_kms_crypto_key_iam_member.gke]
}
