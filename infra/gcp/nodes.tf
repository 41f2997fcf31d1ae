# A CPU pool that always runs and a GPU pool that scales from zero, tainted nvidia.com/gpu and
# labelled distilqa.io/pool=gpu-<type> (what the pipeline's GPU steps tolerate and select).

resource "google_service_account" "nodes" {
  account_id   = "${var.name}-nodes"
  display_name = "distilqa GKE nodes (logging, monitoring, image pulls only)"
}

resource "google_project_iam_member" "nodes" {
  for_each = toset(["roles/logging.logWriter", "roles/monitoring.metricWriter", "roles/monitoring.viewer", "roles/artifactregistry.reader"])
  project  = var.project
  role     = each.value
  member   = "serviceAccount:${google_service_account.nodes.email}"
}

resource "google_container_node_pool" "system" {
  name     = "system"
  cluster  = google_container_cluster.this.id
  location = var.region

  autoscaling {
    min_node_count = 1
    max_node_count = 3
  }

  management {
    auto_repair  = true
    auto_upgrade = true
  }

  node_config {
    machine_type    = "e2-standard-8"
    image_type      = "COS_CONTAINERD"
    service_account = google_service_account.nodes.email
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]
    labels          = { "distilqa.io/pool" = "system" }

    workload_metadata_config {
      mode = "GKE_METADATA"
    }
    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }
    metadata = { disable-legacy-endpoints = "true" }
  }
}

resource "google_container_node_pool" "gpu" {
  name           = local.gpu_pool_label
  cluster        = google_container_cluster.this.id
  location       = var.region
  node_locations = var.gpu_zones

  autoscaling {
    total_min_node_count = 0
    total_max_node_count = var.gpu_nodes_max
  }

  management {
    auto_repair  = true
    auto_upgrade = true
  }

  node_config {
    machine_type = local.gpu[var.gpu_type].machine
    # Ubuntu: the GPU Operator installs the R580 driver itself (GKE's own driver install is disabled
    # below, since GKE's default branch for new versions may have dropped Volta)
    image_type      = "UBUNTU_CONTAINERD"
    disk_size_gb    = 500
    disk_type       = "pd-ssd"
    spot            = var.gpu_spot
    service_account = google_service_account.nodes.email
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]
    labels = {
      "distilqa.io/pool"       = local.gpu_pool_label
      "nvidia.com/gpu.present" = "true"
    }

    guest_accelerator {
      type  = local.gpu[var.gpu_type].accelerator
      count = local.gpu_count
      gpu_driver_installation_config {
        gpu_driver_version = "INSTALLATION_DISABLED"
      }
    }

    taint {
      key    = "nvidia.com/gpu"
      value  = "true"
      effect = "NO_SCHEDULE"
    }

    workload_metadata_config {
      mode = "GKE_METADATA"
    }
    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }
    metadata = { disable-legacy-endpoints = "true" }
  }
}

module "gpu_operator" {
  source         = "../modules/gpu-operator"
  install_driver = true
  driver_version = var.nvidia_driver_version
  node_selector  = { "nvidia.com/gpu.present" = "true" }

  depends_on = [google_container_node_pool.system]
}
