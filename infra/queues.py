"""The stack's dead-letter queues: encrypted with the stage's key, TLS only, kept 14 days."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.findings import acknowledge


def dead_letter_queue(
    scope: Construct, construct_id: str, key: kms.IKey, *, holds: str, fifo: bool = False
) -> sqs.Queue:
    """A queue for what `holds` could not deliver; FIFO for a FIFO queue's dead letters."""
    queue = sqs.Queue(
        scope,
        construct_id,
        fifo=True if fifo else None,  # absent, not false: a standard queue as before
        encryption=sqs.QueueEncryption.KMS,
        encryption_master_key=key,
        enforce_ssl=True,
        retention_period=Duration.days(14),
        removal_policy=RemovalPolicy.DESTROY,
    )
    acknowledge(queue, "SQS3", f"this queue is itself {holds} dead-letter queue")
    return queue
