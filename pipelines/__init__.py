"""peftops: the SageMaker pipeline's definition, its local stand-in, the model registry, the CLI,
and offline fixtures, one sub-package each.

The SageMaker SDK creates boto3 clients when it is imported, which fails without a region, and
botocore would probe the EC2 metadata service for credentials, which hangs offline. Building a
definition needs neither; the deployment's region is passed explicitly.
"""

import os

os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
os.environ.setdefault("SAGEMAKER_VALIDATE_ROLE", "false")
