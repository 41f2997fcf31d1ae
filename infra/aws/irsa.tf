# IRSA: each workload's Kubernetes service account assumes its own IAM role, scoped to the buckets it
# needs. No static access keys exist anywhere; the manifests' ServiceAccounts carry the role ARNs
# (outputs.irsa_role_arns) in eks.amazonaws.com/role-arn.

locals {
  oidc_host = replace(aws_iam_openid_connect_provider.this.url, "https://", "")
  workloads = {
    # KFP runs pipeline pods as kubeflow/pipeline-runner; ml-pipeline reads the pipeline root for the UI
    kfp = {
      service_accounts = ["kubeflow:pipeline-runner", "kubeflow:ml-pipeline", "kubeflow:ml-pipeline-ui"]
      read_write       = ["pipeline-root", "models"]
      read_only        = ["data"]
    }
    mlflow = {
      service_accounts = ["mlflow:mlflow"]
      read_write       = ["mlflow"]
      read_only        = []
    }
    # KServe's storage initializer runs as the predictor's service account
    kserve = {
      service_accounts = ["distilqa:distilqa-serving"]
      read_write       = []
      read_only        = ["models", "mlflow"]
    }
  }
}

data "aws_iam_policy_document" "irsa_assume" {
  for_each = local.workloads
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [aws_iam_openid_connect_provider.this.arn]
    }
    condition {
      test     = "StringEquals"
      variable = "${local.oidc_host}:aud"
      values   = ["sts.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "${local.oidc_host}:sub"
      values   = [for sa in each.value.service_accounts : "system:serviceaccount:${sa}"]
    }
  }
}

data "aws_iam_policy_document" "irsa_access" {
  for_each = local.workloads

  dynamic "statement" {
    for_each = length(each.value.read_write) > 0 ? [1] : []
    content {
      sid       = "ReadWrite"
      actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
      resources = [for b in each.value.read_write : "${aws_s3_bucket.this[b].arn}/*"]
    }
  }
  dynamic "statement" {
    for_each = length(each.value.read_only) > 0 ? [1] : []
    content {
      sid       = "ReadOnly"
      actions   = ["s3:GetObject"]
      resources = [for b in each.value.read_only : "${aws_s3_bucket.this[b].arn}/*"]
    }
  }
  statement {
    sid       = "List"
    actions   = ["s3:ListBucket", "s3:GetBucketLocation"]
    resources = [for b in concat(each.value.read_write, each.value.read_only) : aws_s3_bucket.this[b].arn]
  }
  statement {
    sid       = "BucketKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.this.arn]
  }
}

resource "aws_iam_role" "irsa" {
  for_each           = local.workloads
  name               = "${var.name}-${each.key}"
  assume_role_policy = data.aws_iam_policy_document.irsa_assume[each.key].json
}

resource "aws_iam_role_policy" "irsa" {
  for_each = local.workloads
  name     = "buckets"
  role     = aws_iam_role.irsa[each.key].id
  policy   = data.aws_iam_policy_document.irsa_access[each.key].json
}

# the cluster autoscaler scales the GPU group from zero
data "aws_iam_policy_document" "autoscaler_assume" {
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [aws_iam_openid_connect_provider.this.arn]
    }
    condition {
      test     = "StringEquals"
      variable = "${local.oidc_host}:sub"
      values   = ["system:serviceaccount:kube-system:cluster-autoscaler"]
    }
  }
}

data "aws_iam_policy_document" "autoscaler" {
  #checkov:skip=CKV_AWS_356:Describe* calls have no resource-level permissions; scaling is limited by the owned tag
  statement {
    sid = "Describe"
    actions = [
      "autoscaling:DescribeAutoScalingGroups", "autoscaling:DescribeAutoScalingInstances",
      "autoscaling:DescribeLaunchConfigurations", "autoscaling:DescribeScalingActivities",
      "autoscaling:DescribeTags", "ec2:DescribeImages", "ec2:DescribeInstanceTypes",
      "ec2:DescribeLaunchTemplateVersions", "ec2:GetInstanceTypesFromInstanceRequirements",
      "eks:DescribeNodegroup",
    ]
    resources = ["*"] # describe calls do not support resource-level permissions
  }
  statement {
    sid       = "ScaleOwnGroups"
    actions   = ["autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup"]
    resources = ["*"]
    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/k8s.io/cluster-autoscaler/${var.name}"
      values   = ["owned"]
    }
  }
}

resource "aws_iam_role" "autoscaler" {
  name               = "${var.name}-cluster-autoscaler"
  assume_role_policy = data.aws_iam_policy_document.autoscaler_assume.json
}

resource "aws_iam_role_policy" "autoscaler" {
  name   = "autoscale"
  role   = aws_iam_role.autoscaler.id
  policy = data.aws_iam_policy_document.autoscaler.json
}
