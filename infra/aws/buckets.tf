# Buckets: SQuAD data and corpora, the KFP pipeline root (big, short-lived intermediates), MLflow
# artifacts (runs and registered models), models (what KServe serves) and access logs.
# All private, KMS-encrypted, TLS-only and versioned; replaced versions of intermediates and logs
# expire after a week, those of data, runs and models after var.noncurrent_version_days.

locals {
  buckets = {
    data          = { noncurrent_days = var.noncurrent_version_days, expire_days = 0 }
    pipeline-root = { noncurrent_days = 7, expire_days = var.artifact_retention_days }
    mlflow        = { noncurrent_days = var.noncurrent_version_days, expire_days = 0 }
    models        = { noncurrent_days = var.noncurrent_version_days, expire_days = 0 }
    logs          = { noncurrent_days = 7, expire_days = 365 }
  }
  # every bucket but the log bucket itself sends access logs to it
  logged_buckets = { for k, v in local.buckets : k => v if k != "logs" }
}

resource "aws_s3_bucket" "this" {
  #checkov:skip=CKV_AWS_144:no cross-region replica: data and models are reproducible from the pipeline and the registry, and a replica doubles storage; add one for DR
  #checkov:skip=CKV_AWS_18:aws_s3_bucket_logging.this logs every bucket but logs itself; checkov 3.3 links that for_each to only some instances
  #checkov:skip=CKV2_AWS_62:nothing consumes bucket events; the pipeline passes object URIs explicitly
  for_each = local.buckets
  bucket   = "${var.name}-${each.key}-${data.aws_caller_identity.current.account_id}"
}

resource "aws_s3_bucket_public_access_block" "this" {
  for_each                = local.buckets
  bucket                  = aws_s3_bucket.this[each.key].id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "this" {
  for_each = local.buckets
  bucket   = aws_s3_bucket.this[each.key].id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "this" {
  for_each = local.buckets
  bucket   = aws_s3_bucket.this[each.key].id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.this.arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_versioning" "this" {
  for_each = local.buckets
  bucket   = aws_s3_bucket.this[each.key].id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "this" {
  for_each = local.buckets
  bucket   = aws_s3_bucket.this[each.key].id

  rule {
    id     = "abort-incomplete-uploads"
    status = "Enabled"
    filter {}
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }

  rule {
    id     = "expire-noncurrent-versions"
    status = "Enabled"
    filter {}
    noncurrent_version_expiration {
      noncurrent_days = local.buckets[each.key].noncurrent_days
    }
  }

  rule {
    id     = "expire-objects"
    status = local.buckets[each.key].expire_days > 0 ? "Enabled" : "Disabled"
    filter {}
    expiration {
      days = max(local.buckets[each.key].expire_days, 1)
    }
  }

  depends_on = [aws_s3_bucket_versioning.this]
}

resource "aws_s3_bucket_logging" "this" {
  for_each      = local.logged_buckets
  bucket        = aws_s3_bucket.this[each.key].id
  target_bucket = aws_s3_bucket.this["logs"].id
  target_prefix = "s3-access/${each.key}/"
}

data "aws_iam_policy_document" "tls_only" {
  for_each = local.buckets
  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    resources = [each.value.arn, "${each.value.arn}/*"]
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "this" {
  for_each = local.buckets
  bucket   = aws_s3_bucket.this[each.key].id
  policy   = data.aws_iam_policy_document.tls_only[each.key].json
}
