"""The Model Package Group adapters are registered into, optionally shared for promotion."""

from __future__ import annotations

import json

from aws_cdk import Stack
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct


class ModelRegistry(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        group_name: str,
        promotion_account_ids: tuple[str, ...],
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        policy = None
        if promotion_account_ids:
            # Accounts that promote adapters (e.g. prod) may read versions, never change them:
            # an approval or a stage set from there would reach this account's deployers.
            policy = {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "PromotionAccounts",
                        "Effect": "Allow",
                        "Principal": {
                            "AWS": [
                                f"arn:{stack.partition}:iam::{account}:root"
                                for account in promotion_account_ids
                            ]
                        },
                        "Action": [
                            "sagemaker:DescribeModelPackageGroup",
                            "sagemaker:DescribeModelPackage",
                            "sagemaker:ListModelPackages",
                        ],
                        "Resource": [
                            f"arn:{stack.partition}:sagemaker:{stack.region}:{stack.account}:model-package-group/{group_name}",
                            f"arn:{stack.partition}:sagemaker:{stack.region}:{stack.account}:model-package/{group_name}/*",
                        ],
                    }
                ],
            }
        self.group = sagemaker.CfnModelPackageGroup(
            self,
            "Group",
            model_package_group_name=group_name,
            model_package_group_description="PEFT adapters for dialogue summarization (peftops)",
            model_package_group_policy=json.loads(json.dumps(policy)) if policy else None,
        )
        self.group_arn = f"arn:{stack.partition}:sagemaker:{stack.region}:{stack.account}:model-package-group/{group_name}"
