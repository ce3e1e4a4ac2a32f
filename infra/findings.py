"""cdk-nag findings a construct accepts, acknowledged beside the statements that cause them:
the rule, the resource as cdk-nag names it in the finding, and why the grant is right there."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Stack, Token, Validations
from aws_cdk import aws_s3 as s3
from constructs import Construct


def acknowledge(scope: Construct, rule: str, reason: str) -> None:
    """A cdk-nag finding accepted for this resource only, with the reason it is right here."""
    Validations.of(scope).acknowledge(
        Acknowledgment(id=f"AwsSolutions::AwsSolutions-{rule}", reason=reason)
    )


def bucket_objects(scope: Construct, bucket: s3.IBucket, keys: str = "*") -> str:
    """cdk-nag's name for the objects of `bucket` whose keys match `keys`
    (`Resource::<BucketLogicalId.Arn>/pipelines/x/*`)."""
    logical_id = Stack.of(scope).get_logical_id(bucket.node.default_child)
    return f"Resource::<{logical_id}.Arn>/{keys}"


def partition(stack: Stack) -> str:
    """cdk-nag's name for this stack's partition: a literal where CDK writes one
    (`@aws-cdk/core:enablePartitionLiterals` and a known region), else the token."""
    return "<AWS::Partition>" if Token.is_unresolved(stack.partition) else stack.partition


def account_resource(scope: Construct, service: str, resource: str) -> str:
    """cdk-nag's name for a resource of this stack's account and region; the account is a token
    unless the stage's environment names it."""
    stack = Stack.of(scope)
    account = "<AWS::AccountId>" if Token.is_unresolved(stack.account) else stack.account
    return f"Resource::arn:{partition(stack)}:{service}:{stack.region}:{account}:{resource}"
