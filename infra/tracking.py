"""An optional SageMaker managed MLflow tracking server per stage (`"mlflow_tracking_server":
"Small"` in cdk.json), the cloud form of the local SQLite store: training and evaluation jobs
log their runs to it (its ARN is their MLFLOW_TRACKING_URI) and its artifacts live in the
project's encrypted bucket under `mlflow/`.

The server's own role reads and writes only that prefix. Jobs get only what logging needs
(`tracking_statements`): the MLflow calls a run makes on this one server, and writing its
artifacts, which the MLflow client uploads to the artifact store itself."""

from __future__ import annotations

from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from infra.findings import acknowledge, bucket_objects

ARTIFACT_PREFIX = "mlflow/"
# The calls training_scripts/tracking.py makes through the MLflow client: set_experiment
# (GetExperimentByName, then CreateExperiment and GetExperiment the first time), start_run
# with its tags (CreateRun), log_params and log_metrics (LogBatch), log_artifact (GetRun for
# the run's artifact location, then S3 directly), end_run (UpdateRun).
LOGGING_ACTIONS = [
    "sagemaker-mlflow:GetExperimentByName",
    "sagemaker-mlflow:CreateExperiment",
    "sagemaker-mlflow:GetExperiment",
    "sagemaker-mlflow:CreateRun",
    "sagemaker-mlflow:LogBatch",
    "sagemaker-mlflow:GetRun",
    "sagemaker-mlflow:UpdateRun",
]


class TrackingServer(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        name: str,
        size: str,
        bucket: s3.IBucket,
        key: kms.IKey,
    ) -> None:
        super().__init__(scope, construct_id)
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
            description="peftops MLflow tracking server: its artifact store only",
        )
        policy = iam.Policy(
            self,
            "Policy",
            statements=[
                iam.PolicyStatement(
                    sid="ArtifactStore",
                    actions=["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
                    resources=[bucket.arn_for_objects(f"{ARTIFACT_PREFIX}*")],
                ),
                iam.PolicyStatement(
                    sid="ListArtifactStore",
                    actions=["s3:ListBucket"],
                    resources=[bucket.bucket_arn],
                    conditions={"StringLike": {"s3:prefix": [f"{ARTIFACT_PREFIX}*"]}},
                ),
                # Its requests carry no prefix, so it cannot share the condition above.
                iam.PolicyStatement(
                    sid="LocateArtifactStore",
                    actions=["s3:GetBucketLocation"],
                    resources=[bucket.bucket_arn],
                ),
                iam.PolicyStatement(
                    sid="ArtifactEncryption",
                    actions=["kms:Decrypt", "kms:GenerateDataKey*", "kms:DescribeKey"],
                    resources=[key.key_arn],
                ),
            ],
        )
        policy.attach_to_role(self.role)
        self.server = sagemaker.CfnMlflowTrackingServer(
            self,
            "Server",
            tracking_server_name=name,
            artifact_store_uri=f"s3://{bucket.bucket_name}/{ARTIFACT_PREFIX}",
            role_arn=self.role.role_arn,
            tracking_server_size=size,
            # Adapters are registered by the pipeline, with their gate; MLflow only tracks.
            automatic_model_registration=False,
        )
        self.server.node.add_dependency(policy)
        self.arn = self.server.attr_tracking_server_arn
        self.artifacts_finding = f"IAM5[{bucket_objects(self, bucket, f'{ARTIFACT_PREFIX}*')}]"
        acknowledge(
            self,
            self.artifacts_finding,
            "the tracking server's artifact store, this prefix of the project bucket only",
        )
        acknowledge(
            self,
            "IAM5[Action::kms:GenerateDataKey*]",
            "GenerateDataKey and GenerateDataKeyWithoutPlaintext on the project key only, for the artifact store",
        )

    def grant_logging(self, policy: iam.Policy, bucket: s3.IBucket, key: kms.IKey) -> None:
        """Lets a job's role log runs, metrics and artifacts to this server."""
        policy.add_statements(*tracking_statements(self.arn, bucket, key))
        acknowledge(
            policy,
            self.artifacts_finding,
            "MLflow artifacts of this project's tracking server, which the MLflow client uploads under run ids",
        )


def tracking_statements(
    server_arn: str, bucket: s3.IBucket, key: kms.IKey
) -> list[iam.PolicyStatement]:
    """What a job needs to log runs to the server: no more."""
    return [
        iam.PolicyStatement(
            sid="TrackExperiments", actions=LOGGING_ACTIONS, resources=[server_arn]
        ),
        iam.PolicyStatement(
            sid="WriteTrackingArtifacts",
            actions=["s3:PutObject", "s3:AbortMultipartUpload"],
            resources=[bucket.arn_for_objects(f"{ARTIFACT_PREFIX}*")],
        ),
        iam.PolicyStatement(
            sid="EncryptTrackingArtifacts",
            actions=["kms:GenerateDataKey*"],
            resources=[key.key_arn],
        ),
    ]
