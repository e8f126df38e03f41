# Serving images: immutable tags (ztml deploys by digest anyway), scanned on push, KMS.
resource "aws_ecr_repository" "models" {
  name                 = "${var.name}-models"
  image_tag_mutability = "IMMUTABLE"

  image_scanning_configuration {
    scan_on_push = true
  }

  encryption_configuration {
    encryption_type = "KMS"
    kms_key         = aws_kms_key.this.arn
  }
}

resource "aws_ecr_lifecycle_policy" "models" {
  repository = aws_ecr_repository.models.name
  policy = jsonencode({
    rules = [{
      rulePriority = 1
      description  = "Drop untagged images after 14 days"
      selection = {
        tagStatus   = "untagged"
        countType   = "sinceImagePushed"
        countUnit   = "days"
        countNumber = 14
      }
      action = { type = "expire" }
    }]
  })
}
