# Two managed node groups: a small CPU pool that always runs (KFP, MLflow, predictors) and a GPU pool
# that scales from zero. The GPU pool is tainted nvidia.com/gpu:NoSchedule and labelled
# distilqa.io/pool=gpu-<type>, which is what the pipeline's GPU steps tolerate and select
# (resources.gpu_node_selector in pipelines/profiles/production.yaml).

locals {
  gpu_instance = {
    v100 = { instance = "p3.8xlarge", gpus = 4 }
    a100 = { instance = "p4d.24xlarge", gpus = 8 }
    h100 = { instance = "p5.48xlarge", gpus = 8 }
    l4   = { instance = "g6.12xlarge", gpus = 4 }
  }
  gpu_instance_type = var.gpu_instance_type != "" ? var.gpu_instance_type : local.gpu_instance[var.gpu_type].instance
  gpu_pool_label    = "gpu-${var.gpu_type}"
}

data "aws_iam_policy_document" "ec2_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "node" {
  name               = "${var.name}-node"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
}

resource "aws_iam_role_policy_attachment" "node" {
  for_each = toset(["AmazonEKSWorkerNodePolicy", "AmazonEKS_CNI_Policy", "AmazonEC2ContainerRegistryReadOnly", "AmazonSSMManagedInstanceCore"])
  role     = aws_iam_role.node.name
  # nodes get no S3 rights: workloads reach their buckets through IRSA only
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/${each.value}"
}

resource "aws_launch_template" "node" {
  for_each = { system = 100, gpu = 500 } # root volume GiB: the GPU image and its torch layers are big
  name     = "${var.name}-${each.key}"

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required" # IMDSv2 only
    http_put_response_hop_limit = 1          # pods cannot reach the node role's credentials
  }

  block_device_mappings {
    device_name = "/dev/xvda"
    ebs {
      volume_size = each.value
      volume_type = "gp3"
      encrypted   = true
      kms_key_id  = aws_kms_key.this.arn
    }
  }
}

resource "aws_eks_node_group" "system" {
  cluster_name    = aws_eks_cluster.this.name
  node_group_name = "system"
  node_role_arn   = aws_iam_role.node.arn
  subnet_ids      = aws_subnet.private[*].id
  instance_types  = [var.system_instance_type]
  ami_type        = "AL2023_x86_64_STANDARD"
  labels          = { "distilqa.io/pool" = "system" }

  scaling_config {
    min_size     = var.system_nodes.min
    desired_size = var.system_nodes.desired
    max_size     = var.system_nodes.max
  }

  launch_template {
    id      = aws_launch_template.node["system"].id
    version = aws_launch_template.node["system"].latest_version
  }

  depends_on = [aws_iam_role_policy_attachment.node]
}

resource "aws_eks_node_group" "gpu" {
  cluster_name    = aws_eks_cluster.this.name
  node_group_name = local.gpu_pool_label
  node_role_arn   = aws_iam_role.node.arn
  subnet_ids      = aws_subnet.private[*].id
  instance_types  = [local.gpu_instance_type]
  capacity_type   = var.gpu_capacity_type
  # the EKS-optimised NVIDIA AMI: driver + container toolkit baked in. Pin release_version to an AMI
  # release whose driver is on the R580 branch for V100 (see docs/runbook.md, step 2).
  ami_type        = "AL2023_x86_64_NVIDIA"
  release_version = var.gpu_ami_release_version != "" ? var.gpu_ami_release_version : null
  labels = {
    "distilqa.io/pool"       = local.gpu_pool_label
    "nvidia.com/gpu.present" = "true"
  }

  taint {
    key    = "nvidia.com/gpu"
    value  = "true"
    effect = "NO_SCHEDULE"
  }

  scaling_config {
    min_size     = 0
    desired_size = 0
    max_size     = var.gpu_nodes_max
  }

  launch_template {
    id      = aws_launch_template.node["gpu"].id
    version = aws_launch_template.node["gpu"].latest_version
  }

  lifecycle {
    # the autoscaler owns desired_size
    ignore_changes = [scaling_config[0].desired_size]
    precondition {
      condition     = var.gpu_type != "v100" || var.gpu_ami_release_version != ""
      error_message = "For V100 pin gpu_ami_release_version to an EKS NVIDIA AMI release with an R580 driver: newer branches dropped Volta."
    }
  }

  depends_on = [aws_iam_role_policy_attachment.node]
}

# Scale from zero: the cluster autoscaler reads the labels, taints and GPU count of an empty group
# from these ASG tags, since it has no node to look at.
resource "aws_autoscaling_group_tag" "gpu_template" {
  for_each = {
    "k8s.io/cluster-autoscaler/enabled"                                   = "true"
    "k8s.io/cluster-autoscaler/${var.name}"                               = "owned"
    "k8s.io/cluster-autoscaler/node-template/label/distilqa.io/pool"      = local.gpu_pool_label
    "k8s.io/cluster-autoscaler/node-template/taint/nvidia.com/gpu"        = "true:NoSchedule"
    "k8s.io/cluster-autoscaler/node-template/resources/nvidia.com/gpu"    = tostring(local.gpu_instance[var.gpu_type].gpus)
    "k8s.io/cluster-autoscaler/node-template/resources/ephemeral-storage" = "500G"
  }
  autoscaling_group_name = aws_eks_node_group.gpu.resources[0].autoscaling_groups[0].name

  tag {
    key                 = each.key
    value               = each.value
    propagate_at_launch = false
  }
}
