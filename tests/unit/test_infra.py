"""The CDK stack: each construct's security properties, cdk-nag on every synth, cfn-lint,
deterministic templates, and the dev/prod stages."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

import aws_cdk as cdk
import cdk_nag
from aws_cdk.assertions import Match, Template

from infra.pipeline import built_job_image, role_variable, templated_definition
from infra.stack import PeftopsStack
from pipelines.definition import definition_json
from pipelines.definition.config import Deployment, JobKind, PipelineConfig
from pipelines.definition.stages import stage_settings
from tests.conftest import REPO

STAGES = json.loads((REPO / "cdk.json").read_text())["context"]["stages"]
CONTEXT = {
    k: v
    for k, v in json.loads((REPO / "cdk.json").read_text())["context"].items()
    if k.startswith("@")
}


def synth(stage: str, outdir: Path) -> tuple[Template, PeftopsStack, cdk.App]:
    app = cdk.App(outdir=str(outdir), context=CONTEXT)
    settings = stage_settings(STAGES, stage)
    stack = PeftopsStack(
        app,
        f"Peftops-{stage}",
        settings=settings,
        env=cdk.Environment(account="123456789012", region=settings.region),
    )
    cdk.Validations.of(app).add_plugins(cdk_nag.AwsSolutionsChecks(app))
    app.synth()  # runs cdk-nag: raises on any unacknowledged finding
    return Template.from_stack(stack), stack, app


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> tuple[Template, PeftopsStack, cdk.App]:
    return synth("dev", tmp_path_factory.mktemp("cdk-dev"))


@pytest.fixture(scope="module")
def prod(tmp_path_factory: pytest.TempPathFactory) -> tuple[Template, PeftopsStack, cdk.App]:
    return synth("prod", tmp_path_factory.mktemp("cdk-prod"))


def resources(template: Template, kind: str) -> dict[str, Any]:
    return template.find_resources(kind)


# --- storage -------------------------------------------------------------------------------


def test_key_rotates(dev) -> None:
    template, _, _ = dev
    template.has_resource_properties("AWS::KMS::Key", {"EnableKeyRotation": True})


def test_artifact_bucket_is_encrypted_private_versioned_logged_and_expiring(dev) -> None:
    template, stack, _ = dev
    key_id = stack.get_logical_id(stack.storage.key.node.default_child)
    logs_id = stack.get_logical_id(stack.storage.access_logs.node.default_child)
    template.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "BucketEncryption": {
                "ServerSideEncryptionConfiguration": [
                    {
                        "ServerSideEncryptionByDefault": {
                            "SSEAlgorithm": "aws:kms",
                            "KMSMasterKeyID": {"Fn::GetAtt": [key_id, "Arn"]},
                        },
                        "BucketKeyEnabled": True,
                    }
                ]
            },
            "PublicAccessBlockConfiguration": {
                "BlockPublicAcls": True,
                "BlockPublicPolicy": True,
                "IgnorePublicAcls": True,
                "RestrictPublicBuckets": True,
            },
            "VersioningConfiguration": {"Status": "Enabled"},
            "LoggingConfiguration": {
                "DestinationBucketName": {"Ref": logs_id},
                "LogFilePrefix": "artifacts/",
            },
            "LifecycleConfiguration": {
                "Rules": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Id": "expire-noncurrent-versions",
                                "NoncurrentVersionExpiration": {"NoncurrentDays": 14},
                            }
                        ),
                        Match.object_like(
                            {
                                "Id": "expire-checkpoints",
                                "Prefix": "pipelines/peftops-adapter-dev/checkpoints/",
                                "ExpirationInDays": 7,
                            }
                        ),
                    ]
                )
            },
        },
    )


def test_every_bucket_refuses_plain_http_and_public_access(dev) -> None:
    template, _, _ = dev
    buckets = resources(template, "AWS::S3::Bucket")
    assert len(buckets) == 2
    for bucket in buckets.values():
        assert all(bucket["Properties"]["PublicAccessBlockConfiguration"].values())
        assert "BucketEncryption" in bucket["Properties"]
    policies = resources(template, "AWS::S3::BucketPolicy")
    tls_denials = [
        s for p in policies.values() for s in p["Properties"]["PolicyDocument"]["Statement"]
        if s["Effect"] == "Deny" and s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}
    ]  # fmt: skip
    assert len(tls_denials) == 2


# --- roles ---------------------------------------------------------------------------------

STAR_RESOURCE_ACTIONS = {
    "ecr:GetAuthorizationToken",
    "cloudwatch:PutMetricData",
    "sagemaker:ListModelPackages",
}


def our_policies(template: Template) -> dict[str, Any]:
    return {
        k: v
        for k, v in resources(template, "AWS::IAM::Policy").items()
        if not k.startswith("CustomCDKBucketDeployment")
    }


def inline_policies(template: Template) -> dict[str, Any]:
    """Policies written into roles (the pipeline functions' roles), by role and name."""
    return {
        f"{role_id}.{policy['PolicyName']}": {"Properties": policy}
        for role_id, role in resources(template, "AWS::IAM::Role").items()
        for policy in role["Properties"].get("Policies", [])
    }


def test_no_wildcard_actions_and_star_resources_only_where_aws_requires(dev) -> None:
    template, _, _ = dev
    policies = our_policies(template)
    # the pipeline's role, a role per kind of job, the scheduler's, the notification publisher
    assert len(policies) == 6
    assert len(inline_policies(template)) == 2  # the pipeline's two functions
    for policy in [*policies.values(), *inline_policies(template).values()]:
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            actions = (
                statement["Action"]
                if isinstance(statement["Action"], list)
                else [statement["Action"]]
            )
            assert all(a != "*" and not a.endswith(":*") for a in actions), statement
            targets = (
                statement["Resource"]
                if isinstance(statement["Resource"], list)
                else [statement["Resource"]]
            )
            if "*" in targets:
                assert set(actions) <= STAR_RESOURCE_ACTIONS, statement


JOB_ROLE_ACTIONS = {
    "cloudwatch:PutMetricData", "ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage",
    "ecr:GetAuthorizationToken", "ecr:GetDownloadUrlForLayer", "kms:CreateGrant", "kms:Decrypt",
    "kms:DescribeKey", "kms:Encrypt", "kms:GenerateDataKey*", "logs:CreateLogGroup",
    "logs:CreateLogStream", "logs:DescribeLogStreams", "logs:PutLogEvents",
    "s3:AbortMultipartUpload", "s3:GetBucketLocation", "s3:GetObject", "s3:ListBucket",
    "s3:PutObject",
}  # fmt: skip
# Every role of a stage and every action it may take: a grant added anywhere fails this until
# it is listed here, which is where least privilege is reviewed. Roles by logical id without
# CDK's hash; CDK's own BucketDeployment handler role (copies the code assets) by its prefix.
ROLE_ACTIONS = {
    "PreprocessJobRole": JOB_ROLE_ACTIONS,
    "EvaluationJobRole": JOB_ROLE_ACTIONS,
    # SageMaker mirrors checkpoint rotation, deleting what train.py rotated out.
    "TrainingJobRole": JOB_ROLE_ACTIONS | {"s3:DeleteObject"},
    "PipelineRole": {
        "iam:PassRole", "kms:CreateGrant", "kms:Decrypt", "kms:DescribeKey",
        "lambda:InvokeFunction", "s3:GetObject", "sagemaker:AddTags",
        "sagemaker:CreateModelPackage", "sagemaker:CreateProcessingJob",
        "sagemaker:CreateTrainingJob", "sagemaker:DescribeModelPackage",
        "sagemaker:DescribePipeline", "sagemaker:DescribePipelineExecution",
        "sagemaker:DescribeProcessingJob", "sagemaker:DescribeTrainingJob",
        "sagemaker:StopProcessingJob", "sagemaker:StopTrainingJob",
    },
    "Functionsresolveinputsrole": {
        "kms:Decrypt", "logs:CreateLogStream", "logs:PutLogEvents", "s3:GetObject",
        "s3:ListBucket",
    },
    "Functionscheckregisteredrole": {
        "kms:Decrypt", "logs:CreateLogStream", "logs:PutLogEvents", "s3:GetObject",
        "sagemaker:BatchDescribeModelPackage", "sagemaker:ListModelPackages",
    },
    "NotificationsPublishRole": {"kms:Decrypt", "kms:GenerateDataKey*", "sns:Publish"},
    "SchedulerRole": {
        "kms:Decrypt", "kms:GenerateDataKey", "sagemaker:StartPipelineExecution",
        "sqs:SendMessage",
    },
    "CustomCDKBucketDeployment": {
        "kms:Decrypt", "kms:DescribeKey", "kms:Encrypt", "kms:GenerateDataKey*",
        "kms:ReEncrypt*", "s3:Abort*", "s3:DeleteObject*", "s3:GetBucket*", "s3:GetObject*",
        "s3:List*", "s3:PutObject", "s3:PutObjectLegalHold", "s3:PutObjectRetention",
        "s3:PutObjectTagging", "s3:PutObjectVersionTagging",
    },
}  # fmt: skip


def role_statements(template: Template) -> list[tuple[str, dict[str, Any]]]:
    """(role logical id, statement) for every statement of every policy attached to a role."""
    found = []
    for logical_id, resource in template.to_json()["Resources"].items():
        if resource["Type"] == "AWS::IAM::Policy":
            for role in resource["Properties"].get("Roles", []):
                for statement in resource["Properties"]["PolicyDocument"]["Statement"]:
                    found.append((role["Ref"], statement))
        elif resource["Type"] == "AWS::IAM::Role":
            for policy in resource["Properties"].get("Policies") or []:
                for statement in policy["PolicyDocument"]["Statement"]:
                    found.append((logical_id, statement))
    return found


def actions_of(statement: dict[str, Any]) -> list[str]:
    action = statement["Action"]
    return action if isinstance(action, list) else [action]


def role_key(logical_id: str) -> str:
    return next(
        (key for key in ROLE_ACTIONS if logical_id.startswith(key) and key.startswith("Custom")),
        re.sub(r"[0-9A-F]{8}$", "", logical_id),
    )


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_every_role_may_take_exactly_its_listed_actions(stage: str, request) -> None:
    template = request.getfixturevalue(stage)[0]
    granted: dict[str, set[str]] = {
        role_key(logical_id): set() for logical_id in resources(template, "AWS::IAM::Role")
    }
    for role, statement in role_statements(template):
        assert statement["Effect"] == "Allow", statement
        granted[role_key(role)].update(actions_of(statement))
    assert granted == ROLE_ACTIONS


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_every_kms_grant_is_only_for_aws_resources(stage: str, request) -> None:
    """A role that may create grants on the key may do so only for an AWS service acting for
    it (a job's volume, a model's artifacts), never hand the key to a principal of its own."""
    template = request.getfixturevalue(stage)[0]
    grants = [
        (role, s) for role, s in role_statements(template) if "kms:CreateGrant" in actions_of(s)
    ]
    assert {role_key(role) for role, _ in grants} == {
        "PipelineRole", "PreprocessJobRole", "TrainingJobRole", "EvaluationJobRole",
    }  # fmt: skip
    for _, statement in grants:
        assert actions_of(statement) == ["kms:CreateGrant"], statement
        assert statement["Condition"] == {"Bool": {"kms:GrantIsForAWSResource": "true"}}


def test_roles_use_no_aws_managed_policies(dev) -> None:
    template, _, _ = dev
    for name, role in resources(template, "AWS::IAM::Role").items():
        if not name.startswith("CustomCDKBucketDeployment"):
            assert "ManagedPolicyArns" not in role["Properties"], name


def test_pipeline_role_registers_reads_and_passes_only_the_job_roles(dev) -> None:
    template, stack, _ = dev
    role_id = stack.get_logical_id(stack.pipeline_role.role.node.default_child)
    role = resources(template, "AWS::IAM::Role")[role_id]
    assert role["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {
        "Service": "sagemaker.amazonaws.com"
    }
    statements = policy_statements(template, stack, stack.pipeline_role.policy)
    assert json.dumps(statements["RegisterAdapters"]["Resource"]).count("peftops-adapters-dev") == 2
    assert statements["PassJobRoles"]["Condition"] == {
        "StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}
    }
    job_role_ids = {
        stack.get_logical_id(job.role.node.default_child) for job in stack.job_roles.values()
    }
    passed = statements["PassJobRoles"]["Resource"]
    assert {r["Fn::GetAtt"][0] for r in passed} == job_role_ids  # never its own role
    written = [
        a for s in statements.values() for a in as_list(s["Action"]) if a.startswith("s3:Put")
    ]
    assert written == []  # the pipeline reads (JsonGet, registration) and writes nothing
    read = [r["Fn::Join"][1][1] for r in statements["ReadRunResults"]["Resource"]]
    assert read == [
        "/pipelines/peftops-adapter-dev/evaluation/*",
        "/pipelines/peftops-adapter-dev/models/*",
    ]


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


JOB_OUTPUTS = {
    "preprocess": ["preprocess/"],
    "training": ["checkpoints/", "models/"],
    "evaluation": ["evaluation/"],
}


def test_job_roles_write_only_their_outputs_and_cannot_touch_the_registry(dev) -> None:
    """Job code runs third-party models and libraries: it must not register or approve a
    model, rewrite code assets or another kind of job's outputs (the evaluation approval
    reads included)."""
    template, stack, _ = dev
    bucket_id = stack.get_logical_id(stack.storage.bucket.node.default_child)
    assert {kind.value for kind in stack.job_roles} == set(JOB_OUTPUTS)
    for kind, job in stack.job_roles.items():
        statements = policy_statements(template, stack, job.policy)
        actions = {a for s in statements.values() for a in as_list(s["Action"])}
        assert not {a for a in actions if a.startswith(("sagemaker:", "iam:", "lambda:"))}, kind
        writes = [s for s in statements.values() if set(as_list(s["Action"])) & WRITE_ACTIONS]
        # SageMaker mirrors checkpoint rotation to S3: training may delete its checkpoints.
        deletes = ["DeleteOwnCheckpoints"] if kind is JobKind.TRAINING else []
        assert [s["Sid"] for s in writes] == ["WriteOwnOutputs", *deletes], kind
        for sid in deletes:
            (resource,) = as_list(statements[sid]["Resource"])
            assert resource["Fn::Join"][1][1] == "/pipelines/peftops-adapter-dev/checkpoints/*"
        grants = [s for s in statements.values() if "kms:CreateGrant" in as_list(s["Action"])]
        assert [s["Condition"] for s in grants] == [{"Bool": {"kms:GrantIsForAWSResource": "true"}}]
        prefixes = [
            r["Fn::Join"][1][1].removeprefix("/pipelines/peftops-adapter-dev/").removesuffix("*")
            for r in as_list(writes[0]["Resource"])
        ]
        assert prefixes == JOB_OUTPUTS[kind.value], kind
        assert all(
            r["Fn::Join"][1][0]["Fn::GetAtt"][0] == bucket_id
            for r in as_list(writes[0]["Resource"])
        )


WRITE_ACTIONS = {"s3:PutObject", "s3:DeleteObject", "s3:PutObjectAcl", "s3:*", "s3:Put*"}


def test_each_job_of_the_definition_runs_under_its_kinds_role(dev) -> None:
    template, stack, _ = dev
    (pipeline,) = resources(template, "AWS::SageMaker::Pipeline").values()
    body, variables = pipeline["Properties"]["PipelineDefinition"]["PipelineDefinitionBody"][
        "Fn::Sub"
    ]
    for kind, job in stack.job_roles.items():
        role_id = stack.get_logical_id(job.role.node.default_child)
        assert variables[f"{kind.value.capitalize()}RoleArn"] == {"Fn::GetAtt": [role_id, "Arn"]}
    definition = json.loads(body.replace("${!", "${"))
    roles = {
        step["Name"]: step["Arguments"]["RoleArn"]
        for step in walk_steps(definition["Steps"])
        if step["Type"] in ("Training", "Processing")
    }
    assert roles == {
        "Preprocess": "${PreprocessRoleArn}",
        "TrainAdapter": "${TrainingRoleArn}",
        "TrainBaseline": "${TrainingRoleArn}",
        "Evaluate": "${EvaluationRoleArn}",
        "EvaluateStoredBaseline": "${EvaluationRoleArn}",
    }


def walk_steps(steps: list[dict[str, Any]]) -> Any:
    for step in steps:
        yield step
        for branch in ("IfSteps", "ElseSteps"):
            yield from walk_steps(step.get("Arguments", {}).get(branch, []))


def policy_statements(template: Template, stack: PeftopsStack, policy: Any) -> dict[str, Any]:
    document = our_policies(template)[stack.get_logical_id(policy.node.default_child)]
    return {s["Sid"]: s for s in document["Properties"]["PolicyDocument"]["Statement"]}


def test_scheduler_role_can_only_start_this_pipeline(dev) -> None:
    template, _stack, _ = dev
    role = next(
        r
        for r in resources(template, "AWS::IAM::Role").values()
        if r["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]
        == {"Service": "scheduler.amazonaws.com"}
    )
    assert role["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Condition"] == {
        "StringEquals": {"aws:SourceAccount": "123456789012"}
    }
    policy = next(
        p
        for p in our_policies(template).values()
        if any(s["Sid"] == "StartPipeline" for s in p["Properties"]["PolicyDocument"]["Statement"])
    )
    start = next(
        s
        for s in policy["Properties"]["PolicyDocument"]["Statement"]
        if s["Sid"] == "StartPipeline"
    )
    assert start["Action"] == "sagemaker:StartPipelineExecution"
    assert "pipeline/peftops-adapter-dev" in json.dumps(
        start["Resource"]
    ) and "*" not in json.dumps(start["Resource"])


# --- registry, pipeline, schedule, notifications --------------------------------------------


def test_model_package_group(dev) -> None:
    template, _, _ = dev
    template.has_resource_properties(
        "AWS::SageMaker::ModelPackageGroup", {"ModelPackageGroupName": "peftops-adapters-dev"}
    )


def test_prod_jobs_run_isolated_on_the_image_cdk_builds_from_the_lock(prod) -> None:
    """prod's jobs have no network: cdk deploy builds their image (training_scripts/Dockerfile
    on the region's training image, only the Dockerfile and the hash-pinned lock in its
    context), every job runs on it and installs nothing, and the base model is a copy in the
    project's bucket."""
    template, stack, app = prod
    outdir = Path(app.outdir)
    (image,) = json.loads((outdir / "Peftops-prod.assets.json").read_text())[
        "dockerImages"
    ].values()
    assert image["source"]["dockerBuildArgs"] == {
        "BASE_IMAGE": "763104351884.dkr.ecr.us-east-1.amazonaws.com/huggingface-pytorch-training:"
        "2.9.0-transformers5.3.0-gpu-py312-cu130-ubuntu22.04"
    }
    context = outdir / image["source"]["directory"]
    assert sorted(p.name for p in context.iterdir()) == ["Dockerfile", "requirements.lock"]
    assert (
        "--require-hashes -r /opt/peftops/requirements.lock" in (context / "Dockerfile").read_text()
    )
    (pipeline,) = resources(template, "AWS::SageMaker::Pipeline").values()
    body, variables = pipeline["Properties"]["PipelineDefinition"]["PipelineDefinitionBody"][
        "Fn::Sub"
    ]
    assert variables["JobImage"]["Fn::Sub"].endswith(
        f"/cdk-hnb659fds-container-assets-123456789012-us-east-1:{image['destinations'].popitem()[1]['imageTag']}"
    )
    definition = json.loads(body.replace("${!", "${"))
    jobs = [s for s in walk_steps(definition["Steps"]) if s["Type"] in ("Training", "Processing")]
    assert len(jobs) == 5
    for step in jobs:
        args = step["Arguments"]
        image_uri = (
            args["AlgorithmSpecification"]["TrainingImage"]
            if step["Type"] == "Training"
            else args["AppSpecification"]["ImageUri"]
        )
        assert image_uri == "${JobImage}", step["Name"]
        isolated = args.get(
            "EnableNetworkIsolation", args.get("NetworkConfig", {}).get("EnableNetworkIsolation")
        )
        assert isolated is True, step["Name"]
    base_model = next(p for p in definition["Parameters"] if p["Name"] == "BaseModel")
    assert base_model["DefaultValue"] == "s3://${Bucket}/base-models/SmolLM2-135M-Instruct/"
    for kind, job in stack.job_roles.items():
        pull = policy_statements(template, stack, job.policy)["PullJobImages"]
        assert "cdk-hnb659fds-container-assets-123456789012-us-east-1" in json.dumps(
            pull["Resource"]
        ), kind


# What CloudFormation puts for each Fn::Sub variable of the definition, in this test.
DEPLOYED = {
    "Bucket": "peftops-artifacts-123456789012",
    "KeyArn": "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-4333-8444-555555555555",
    "JobImage": "123456789012.dkr.ecr.us-east-1.amazonaws.com/jobs:abc",
    "TrackingServerArn": "arn:aws:sagemaker:us-east-1:123456789012:mlflow-tracking-server/t",
    **{
        f"{kind.value.capitalize()}RoleArn": f"arn:aws:iam::123456789012:role/{kind.value}-jobs"
        for kind in JobKind
    },
    "AWS::Partition": "aws",
    "AWS::Region": "us-east-1",
    "AWS::AccountId": "123456789012",
}


def substituted(body: str, variables: dict[str, Any]) -> str:
    """Fn::Sub as CloudFormation applies it: every ${Name} a variable or pseudo parameter, and
    ${!Literal} kept as ${Literal}."""
    used = set(re.findall(r"\$\{(?!!)([^}]+)\}", body))
    unknown = used - set(variables) - {n for n in DEPLOYED if n.startswith("AWS::")}
    assert not unknown, f"Fn::Sub names no such variable: {unknown}"
    assert set(variables) <= used, f"variables the body never uses: {set(variables) - used}"
    rendered = re.sub(r"\$\{(?!!)([^}]+)\}", lambda m: DEPLOYED[m[1]], body)
    return rendered.replace("${!", "${")


def code_asset_files(template: Template, outdir: Path, stack_name: str) -> dict[str, bytes]:
    """The files the CodeAssets deployment uploads, by their key in the bucket."""
    (deployment,) = resources(template, "Custom::CDKBucketDeployment").values()
    (source_key,) = deployment["Properties"]["SourceObjectKeys"]
    manifest = json.loads((outdir / f"{stack_name}.assets.json").read_text())
    (folder,) = [
        entry["source"]["path"]
        for entry in manifest["files"].values()
        if source_key in {d["objectKey"] for d in entry["destinations"].values()}
    ]
    root = outdir / folder
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_the_deployed_definition_is_the_builders_for_the_deployed_resources(
    stage: str, request: pytest.FixtureRequest
) -> None:
    """Once CloudFormation substitutes the stack's values, the definition is what the builder
    makes for that deployment: no synth-time placeholder survives, every variable is used, and
    every code asset the definition names is uploaded, byte for byte, under that key."""
    template, stack, app = request.getfixturevalue(stage)
    (pipeline,) = resources(template, "AWS::SageMaker::Pipeline").values()
    config = stage_settings(STAGES, stage).pipeline
    assert pipeline["Properties"]["PipelineName"] == config.name
    body, variables = pipeline["Properties"]["PipelineDefinition"]["PipelineDefinitionBody"][
        "Fn::Sub"
    ]
    rendered = substituted(body, variables)
    for leftover in ("placeholder", "000000000000"):
        assert leftover not in rendered, leftover

    built_image = None
    if "JobImage" in variables:  # built by cdk deploy: named by its asset hash until then
        built_image = built_job_image(stack.job_image.asset.asset_hash)
        config = dataclasses.replace(config, image_uri=built_image)
    if "TrackingServerArn" in variables:
        config = dataclasses.replace(config, mlflow_tracking_uri=DEPLOYED["TrackingServerArn"])
    deployment = Deployment(
        region="us-east-1",
        role_arn="arn:aws:iam::123456789012:role/pipeline",
        bucket=DEPLOYED["Bucket"],
        kms_key_arn=DEPLOYED["KeyArn"],
        job_role_arns=tuple((kind, DEPLOYED[role_variable(kind)]) for kind in JobKind),
    )
    expected, assets = definition_json(config, deployment)
    if built_image:
        expected = expected.replace(built_image, DEPLOYED["JobImage"])
    assert json.loads(rendered) == json.loads(expected)

    uploaded = code_asset_files(template, Path(app.outdir), stack.stack_name)
    assert uploaded == assets
    named = set(re.findall(rf"s3://{DEPLOYED['Bucket']}/(assets/[^\"]+)", rendered))
    assert named and all(
        key in uploaded or any(k.startswith(key) for k in uploaded) for key in named
    ), named - set(uploaded)


def test_a_rebuilt_job_image_trains_into_new_checkpoint_prefixes() -> None:
    """Checkpoints made under one image are never resumed under another (its libraries, and so
    the training, may differ): the built image's asset hash is part of each prefix."""
    config = stage_settings(STAGES, "prod").pipeline

    def prefixes(tag: str) -> list[str]:
        body, _ = templated_definition(config, "us-east-1", tag)
        found = re.findall(r'"CheckpointConfig": \{"S3Uri": (\{.*?\}), "LocalPath"', body)
        assert len(found) == 2, body
        return found

    first, second = prefixes("a" * 64), prefixes("b" * 64)
    assert all(a != b for a, b in zip(first, second, strict=True))
    assert prefixes("a" * 64) == first


def test_the_definition_calls_exactly_the_functions_the_stack_deploys(dev) -> None:
    from pipelines.definition.service_rules import steps_of

    template, stack, _ = dev
    (pipeline,) = resources(template, "AWS::SageMaker::Pipeline").values()
    body = pipeline["Properties"]["PipelineDefinition"]["PipelineDefinitionBody"]["Fn::Sub"][0]
    called = {
        step["FunctionArn"]
        for step in steps_of(json.loads(body)["Steps"])
        if step["Type"] == "Lambda"
    }
    prefix = "arn:${AWS::Partition}:lambda:${AWS::Region}:${AWS::AccountId}:function:"
    deployed = {
        f"{prefix}{f['Properties']['FunctionName']}"
        for f in resources(template, "AWS::Lambda::Function").values()
        if "FunctionName" in f["Properties"]
    }
    assert called == deployed and len(called) == 2
    invoke = plain(
        policy_statements(template, stack, stack.pipeline_role.policy)["CallPipelineFunctions"]
    )
    assert invoke["Action"] == "lambda:InvokeFunction"
    assert sorted(invoke["Resource"]) == sorted(
        f"arn:aws:lambda:us-east-1:123456789012:function:{arn.removeprefix(prefix)}"
        for arn in called
    )


def test_the_functions_read_only_what_they_need(dev) -> None:
    template, _, _ = dev
    statements = {
        name.split(".")[0]: {s["Sid"]: s for s in p["Properties"]["PolicyDocument"]["Statement"]}
        for name, p in inline_policies(template).items()
    }
    resolve = next(s for s in statements.values() if "ListPublishedDatasets" in s)
    assert resolve["ListPublishedDatasets"]["Condition"] == {
        "StringLike": {"s3:prefix": ["datasets/*/published/*"]}
    }
    assert "/baselines/*" in json.dumps(resolve["ReadStoredBaseline"]["Resource"])
    assert set(resolve) == {
        "ListPublishedDatasets",
        "ReadStoredBaseline",
        "DecryptStoredBaseline",  # the stage's key: S3 decrypts the baseline it reads
        "WriteOwnLogs",
    }
    check = next(s for s in statements.values() if "ListVersions" in s)
    assert set(check) == {
        "ListVersions",
        "DescribeVersions",
        "ReadEvaluations",
        "DecryptEvaluations",
        "WriteOwnLogs",
    }
    assert check["DescribeVersions"]["Action"] == "sagemaker:BatchDescribeModelPackage"
    assert "model-package/peftops-adapters-dev/*" in json.dumps(check["DescribeVersions"])
    assert "/pipelines/peftops-adapter-dev/evaluation/*" in json.dumps(check["ReadEvaluations"])


def test_each_task_has_a_schedule_of_the_pipeline_with_retries_and_an_encrypted_dlq(
    dev, prod
) -> None:
    template, stack, _ = dev
    queue_id = stack.get_logical_id(stack.schedule.dead_letters.node.default_child)
    key_id = stack.get_logical_id(stack.storage.key.node.default_child)
    template.has_resource_properties(
        "AWS::SQS::Queue", {"KmsMasterKeyId": {"Fn::GetAtt": [key_id, "Arn"]}}
    )
    schedules = resources(template, "AWS::Scheduler::Schedule").values()
    # dev declares two tasks: one schedule each, naming its task, on the one pipeline.
    by_task = {
        p["Value"]: schedule["Properties"]
        for schedule in schedules
        for p in schedule["Properties"]["Target"]["SageMakerPipelineParameters"][
            "PipelineParameterList"
        ]
        if p["Name"] == "Task"
    }
    assert sorted(by_task) == ["dialogue-summary", "support-routing"] and len(schedules) == 2
    for props in by_task.values():
        assert props["State"] == "DISABLED"
        assert "pipeline/peftops-adapter-dev" in json.dumps(props["Target"]["Arn"])
        assert props["Target"]["RetryPolicy"] == {
            "MaximumEventAgeInSeconds": 3600,
            "MaximumRetryAttempts": 3,
        }
        assert props["Target"]["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": [queue_id, "Arn"]}}
    (prod_schedule,) = resources(prod[0], "AWS::Scheduler::Schedule").values()
    assert prod_schedule["Properties"]["State"] == "ENABLED"
    assert prod_schedule["Properties"]["Target"]["SageMakerPipelineParameters"][
        "PipelineParameterList"
    ] == [{"Name": "BaselineMode", "Value": "reuse"}, {"Name": "Task", "Value": "dialogue-summary"}]


def test_notifications_on_failed_executions_and_approval_changes(dev) -> None:
    template, stack, _ = dev
    topic_id = stack.get_logical_id(stack.notifications.topic.node.default_child)
    key_id = stack.get_logical_id(stack.storage.key.node.default_child)
    template.has_resource_properties(
        "AWS::SNS::Topic", {"KmsMasterKeyId": {"Fn::GetAtt": [key_id, "Arn"]}}
    )
    rules = resources(template, "AWS::Events::Rule")
    patterns = {
        r["Properties"]["EventPattern"]["detail-type"][0]: r["Properties"] for r in rules.values()
    }
    failed = patterns["SageMaker Model Building Pipeline Execution Status Change"]
    assert failed["EventPattern"]["detail"]["currentPipelineExecutionStatus"] == [
        "Failed",
        "Stopped",
    ]
    approval = patterns["SageMaker Model Package State Change"]
    assert approval["EventPattern"]["detail"] == {"ModelPackageGroupName": ["peftops-adapters-dev"]}
    for rule in (failed, approval):
        assert rule["Targets"][0]["Arn"] == {"Ref": topic_id}


# --- stages, determinism, cdk-nag, cfn-lint ---------------------------------------------------


def test_dev_and_prod_differ_as_configured(dev, prod) -> None:
    def pipeline_definition(template: Template) -> dict[str, Any]:
        (pipeline,) = resources(template, "AWS::SageMaker::Pipeline").values()
        return json.loads(
            pipeline["Properties"]["PipelineDefinition"]["PipelineDefinitionBody"]["Fn::Sub"][
                0
            ].replace("${!", "${")
        )

    dev_definition, prod_definition = pipeline_definition(dev[0]), pipeline_definition(prod[0])

    def train_instance(definition: dict[str, Any]) -> str:
        (step,) = [s for s in definition["Steps"] if s["Name"] == "TrainAdapter"]
        return step["Arguments"]["ResourceConfig"]["InstanceType"]

    instance = {"dev": train_instance(dev_definition), "prod": train_instance(prod_definition)}
    assert instance == {"dev": "ml.g5.2xlarge", "prod": "ml.g5.12xlarge"}
    spot = {
        d: "MaxWaitTimeInSeconds" in json.dumps(x)
        and '"EnableManagedSpotTraining": true' in json.dumps(x)
        for d, x in (("dev", dev_definition), ("prod", prod_definition))
    }
    assert spot == {"dev": True, "prod": False}


def test_synth_is_deterministic(dev, tmp_path: Path) -> None:
    again, _, _ = synth("dev", tmp_path)
    assert json.dumps(again.to_json(), sort_keys=True) == json.dumps(
        dev[0].to_json(), sort_keys=True
    )


def test_an_unacknowledged_finding_fails_synth(tmp_path: Path) -> None:
    from aws_cdk import aws_sqs as sqs

    app = cdk.App(outdir=str(tmp_path))
    stack = cdk.Stack(app, "Careless")
    sqs.Queue(stack, "PlainQueue")  # no encryption in transit, no DLQ
    cdk.Validations.of(app).add_plugins(cdk_nag.AwsSolutionsChecks(app))
    with pytest.raises(RuntimeError, match=r"^ValidationFailed: ") as refused:
        app.synth()
    for rule in ("AwsSolutions-SQS3", "AwsSolutions-SQS4"):  # no DLQ; no TLS-only policy
        assert f"Acknowledge with 'AwsSolutions::{rule}'" in str(refused.value)


def cfn_lint(template_file: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(sys.executable).parent / "cfn-lint"), str(template_file)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cfn_lint_reports_nothing(dev) -> None:
    _, stack, app = dev
    done = cfn_lint(Path(app.outdir) / stack.template_file)
    assert done.returncode == 0, done.stdout + done.stderr


def test_cdk_cli_synthesizes_offline_without_credentials(tmp_path: Path) -> None:
    cdk_cli = REPO / "node_modules" / ".bin" / "cdk"
    assert cdk_cli.exists(), "run `make test`: it installs the pinned CDK CLI with npm ci"
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),  # no AWS config or credentials
        "CDK_DISABLE_CLI_TELEMETRY": "true",
        "CDK_DISABLE_VERSION_CHECK": "1",
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
    }
    command = [
        str(cdk_cli),
        "synth",
        "--no-notices",
        "--quiet",
        "-c",
        "stage=dev",
        "--output",
        str(tmp_path / "out"),
    ]
    if (
        subprocess.run(
            ["unshare", "--net", "--map-root-user", "true"], capture_output=True
        ).returncode
        == 0
    ):
        command = ["unshare", "--net", "--map-root-user", *command]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    template = json.loads((tmp_path / "out" / "Peftops-dev.template.json").read_text())
    assert "AWS::SageMaker::Pipeline" in {r["Type"] for r in template["Resources"].values()}


def synth_variant(
    tmp_path: Path,
    *,
    region: str = "us-east-1",
    stage: dict[str, Any] | None = None,
    **pipeline: Any,
) -> tuple[Template, PeftopsStack]:
    """The dev stage with another region, stage or pipeline settings, synthesized under
    cdk-nag."""
    stage = {
        **STAGES["dev"],
        **(stage or {}),
        "region": region,
        "pipeline": {**STAGES["dev"]["pipeline"], **pipeline},
    }
    app = cdk.App(outdir=str(tmp_path), context=CONTEXT)
    stack = PeftopsStack(
        app,
        "Peftops-dev",
        settings=stage_settings({"dev": stage}, "dev"),
        env=cdk.Environment(account="123456789012", region=region),
    )
    cdk.Validations.of(app).add_plugins(cdk_nag.AwsSolutionsChecks(app))
    app.synth()  # cdk-nag: raises on any unacknowledged finding
    return Template.from_stack(stack), stack


def plain(value: Any) -> Any:
    """A template value with the partition resolved (`Fn::Join` of `Ref AWS::Partition`)."""
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        if set(value) == {"Ref"} and value["Ref"] == "AWS::Partition":
            return "aws"
        if set(value) == {"Fn::Join"}:
            separator, parts = value["Fn::Join"]
            resolved = [plain(p) for p in parts]
            if all(isinstance(p, str) for p in resolved):
                return separator.join(resolved)
            return {"Fn::Join": [separator, resolved]}
        return {k: plain(v) for k, v in value.items()}
    return value


def job_statements(
    template: Template, stack: PeftopsStack, kind: JobKind = JobKind.TRAINING
) -> dict[str, Any]:
    statements = policy_statements(template, stack, stack.job_roles[kind].policy)
    return {sid: plain(s) for sid, s in statements.items()}


def test_role_pulls_exactly_the_jobs_images_of_its_region(dev, tmp_path: Path) -> None:
    template, stack, _ = dev
    pulled = {
        kind: job_statements(template, stack, kind)["PullJobImages"]["Resource"] for kind in JobKind
    }
    # GPU jobs on the Hugging Face image; CPU preprocessing on PyTorch's.
    repository = "arn:aws:ecr:us-east-1:763104351884:repository/"
    assert pulled == {
        JobKind.TRAINING: f"{repository}huggingface-pytorch-training",
        JobKind.PREPROCESS: f"{repository}pytorch-training",
        JobKind.EVALUATION: f"{repository}huggingface-pytorch-training",
    }
    # Cape Town serves the same images from another registry account.
    cape_town = job_statements(*synth_variant(tmp_path, region="af-south-1"))
    assert cape_town["PullJobImages"]["Resource"].startswith(
        "arn:aws:ecr:af-south-1:626614931356:repository/"
    )


def test_the_stage_region_decides_where_it_deploys() -> None:
    from pipelines.definition.stages import deployment_region

    settings = stage_settings(STAGES, "prod")
    assert deployment_region(settings, None) == (settings.region, "")
    assert deployment_region(settings, settings.region) == (settings.region, "")
    region, note = deployment_region(settings, "eu-central-1")
    assert region == settings.region
    assert "deploys to us-east-1 (cdk.json), not to the profile's eu-central-1" in note


def test_vpc_jobs_get_network_interface_permissions_only_when_configured(
    dev, tmp_path: Path
) -> None:
    template, _stack, _ = dev
    assert "ec2:" not in json.dumps(our_policies(template))
    vpc = {"subnet_ids": ["subnet-0a1b"], "security_group_ids": ["sg-0c2d"]}
    statements = job_statements(*synth_variant(tmp_path, vpc=vpc))
    subnet = "arn:aws:ec2:us-east-1:123456789012:subnet/subnet-0a1b"
    assert statements["ManageJobNetworkInterfaces"]["Condition"] == {
        "ArnEquals": {"ec2:Subnet": [subnet]}
    }
    assert set(statements["CreateJobNetworkInterfaces"]["Resource"]) == {
        subnet,
        "arn:aws:ec2:us-east-1:123456789012:security-group/sg-0c2d",
        "arn:aws:ec2:us-east-1:123456789012:network-interface/*",
    }
    assert statements["DescribeJobNetwork"]["Resource"] == "*"


def test_the_role_reads_exactly_the_configured_hub_token_secret(dev, tmp_path: Path) -> None:
    template, _, _ = dev
    assert "secretsmanager" not in json.dumps(our_policies(template))
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:peftops/hf-token-AbCdEf"
    statements = job_statements(*synth_variant(tmp_path, hf_token_secret_arn=arn))
    assert statements["ReadHubToken"] == {
        "Sid": "ReadHubToken",
        "Action": "secretsmanager:GetSecretValue",
        "Effect": "Allow",
        "Resource": arn,
    }


def test_no_policy_grants_the_events_service_itself(dev) -> None:
    """Confused deputy: a resource policy naming events.amazonaws.com without a source
    condition would let any account's rule publish or use the key; rules publish through a
    role whose trust is limited to this account."""
    template, stack, _ = dev
    for kind in ("AWS::KMS::Key", "AWS::SNS::TopicPolicy"):
        for resource in resources(template, kind).values():
            assert "events.amazonaws.com" not in json.dumps(resource), kind
    role_id = stack.get_logical_id(stack.notifications.publisher.node.default_child)
    trust = resources(template, "AWS::IAM::Role")[role_id]["Properties"]["AssumeRolePolicyDocument"]
    (statement,) = trust["Statement"]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert statement["Condition"] == {"StringEquals": {"aws:SourceAccount": "123456789012"}}
    rules = resources(template, "AWS::Events::Rule").values()
    assert all(r["Properties"]["Targets"][0]["RoleArn"] for r in rules)


def test_a_stage_with_a_tracking_server_logs_only_training_and_evaluation_to_it(
    dev, tmp_path: Path
) -> None:
    template, _, _ = dev
    assert not resources(template, "AWS::SageMaker::MlflowTrackingServer")
    assert "sagemaker-mlflow" not in json.dumps(our_policies(template))

    tracked, stack = synth_variant(tmp_path, stage={"mlflow_tracking_server": "Small"})
    (server_id, server), *others = resources(
        tracked, "AWS::SageMaker::MlflowTrackingServer"
    ).items()
    assert not others
    properties = server["Properties"]
    assert properties["TrackingServerSize"] == "Small"
    assert properties["AutomaticModelRegistration"] is False
    assert json.dumps(properties["ArtifactStoreUri"]).endswith('"/mlflow/"]]}')
    server_arn = {"Fn::GetAtt": [server_id, "TrackingServerArn"]}
    for kind in JobKind:
        statements = job_statements(tracked, stack, kind)
        if kind is JobKind.PREPROCESS:
            assert "TrackExperiments" not in statements
            continue
        logging = statements["TrackExperiments"]
        assert logging["Resource"] == server_arn  # this one server, no other
        assert all(a.startswith("sagemaker-mlflow:") for a in logging["Action"])
        assert "sagemaker-mlflow:AccessUI" not in logging["Action"]
        assert "sagemaker-mlflow:DeleteRun" not in logging["Action"]
        assert json.dumps(statements["WriteTrackingArtifacts"]["Resource"]).endswith(
            '/mlflow/*"]]}'
        )
    # The jobs get the server's ARN as their tracking URI, through Fn::Sub.
    (pipeline,) = resources(tracked, "AWS::SageMaker::Pipeline").values()
    body, variables = pipeline["Properties"]["PipelineDefinition"]["PipelineDefinitionBody"][
        "Fn::Sub"
    ]
    assert variables["TrackingServerArn"] == server_arn
    definition = json.loads(body.replace("${!", "${"))
    environments = {
        s["Name"]: s["Arguments"]["Environment"]
        for s in walk_steps(definition["Steps"])
        if s["Type"] in ("Training", "Processing")
    }
    assert environments.pop("Preprocess").get("MLFLOW_TRACKING_URI") is None  # logs no run
    assert environments and all(
        e["MLFLOW_TRACKING_URI"] == "${TrackingServerArn}" for e in environments.values()
    )

    linted = cfn_lint(tmp_path / stack.template_file)
    assert linted.returncode == 0, linted.stdout + linted.stderr


def test_a_tracking_server_size_is_checked_and_isolation_refuses_tracking() -> None:
    with pytest.raises(ValueError, match="mlflow_tracking_server must be one of"):
        stage_settings({"dev": {**STAGES["dev"], "mlflow_tracking_server": "Huge"}}, "dev")
    with pytest.raises(ValueError, match="network_isolation removes"):
        stage_settings({"prod": {**STAGES["prod"], "mlflow_tracking_server": "Small"}}, "prod")


# --- serving -------------------------------------------------------------------------------

SERVING_TYPES = (
    "AWS::SageMaker::Endpoint",
    "AWS::SageMaker::EndpointConfig",
    "AWS::SageMaker::InferenceComponent",
)


def promotion_rules(template: Template) -> list[dict[str, Any]]:
    """The rules that hand a group's state changes to a stage's deployer (its queue)."""
    found = []
    for rule in resources(template, "AWS::Events::Rule").values():
        arns = [t["Arn"] for t in rule["Properties"].get("Targets", [])]
        if any(a.get("Fn::GetAtt", [""])[0].startswith("ServingDeployments") for a in arns):
            found.append(rule)
    return found


def test_no_endpoint_unless_a_stage_switches_serving_on(dev, prod) -> None:
    for template, _, _ in (dev, prod):
        for kind in SERVING_TYPES:
            assert not resources(template, kind), kind
        assert not promotion_rules(template)
        functions = resources(template, "AWS::Lambda::Function").values()
        assert not [f for f in functions if f["Properties"]["Handler"] == "deployer.handler"]


def test_a_serving_stage_has_an_lmi_base_component_and_a_deployer_for_its_promotions(
    tmp_path: Path,
) -> None:
    from pipelines.definition.images import LMI_VERSION, serving_image

    template, stack = synth_variant(tmp_path, stage={"serving": {"lifecycle_stage": "staging"}})
    done = cfn_lint(tmp_path / stack.template_file)
    assert done.returncode == 0, done.stdout + done.stderr
    endpoint_name = "peftops-adapter-dev-staging"
    (config,) = resources(template, "AWS::SageMaker::EndpointConfig").values()
    (variant,) = config["Properties"]["ProductionVariants"]
    assert variant["InstanceType"] == "ml.g5.2xlarge"
    # No KmsKeyId on an instance with local NVMe storage: the API refuses it there.
    assert "KmsKeyId" not in config["Properties"]
    assert "ExecutionRoleArn" in config["Properties"]  # inference components need it
    (endpoint,) = resources(template, "AWS::SageMaker::Endpoint").values()
    assert endpoint["Properties"]["EndpointName"] == endpoint_name
    (base,) = resources(template, "AWS::SageMaker::InferenceComponent").values()
    spec = base["Properties"]["Specification"]
    assert base["Properties"]["InferenceComponentName"] == f"{endpoint_name}-base"
    assert spec["Container"]["Image"] == serving_image(PipelineConfig(), "us-east-1")
    assert f":{LMI_VERSION}-lmi" in spec["Container"]["Image"]
    # What the pipeline registers is what this endpoint deploys: the adapter as the
    # container's model data, on this image, for this base model, with LoRA serving on.
    (pipeline,) = resources(template, "AWS::SageMaker::Pipeline").values()
    body, _ = pipeline["Properties"]["PipelineDefinition"]["PipelineDefinitionBody"]["Fn::Sub"]
    definition = json.loads(body.replace("${!", "${"))
    parameters = {p["Name"]: p["DefaultValue"] for p in definition["Parameters"]}
    registrations = [
        s for s in walk_steps(definition["Steps"]) if s["Type"] == "RegisterModel"
    ]  # fmt: skip
    assert len(registrations) == 2  # the trained and the stored baseline's branch
    for registration in registrations:
        (registered,) = registration["Arguments"]["InferenceSpecification"]["Containers"]
        assert registered["Image"] == spec["Container"]["Image"]
        assert registered["ModelDataUrl"] == {
            "Get": "Steps.TrainAdapter.ModelArtifacts.S3ModelArtifacts"
        }
        environment = registered["Environment"]
        assert environment["HF_MODEL_ID"] == {"Get": "Parameters.BaseModel"}
        assert parameters["BaseModel"] == spec["Container"]["Environment"]["HF_MODEL_ID"]
        # The version's container and the stage's base component: one model, one context.
        shared = {k for k in environment if k.startswith("OPTION_")}
        assert shared == {"OPTION_ENABLE_LORA", "OPTION_MAX_MODEL_LEN"}
        assert {k: spec["Container"]["Environment"][k] for k in shared} == {
            k: environment[k] for k in shared
        }
    assert spec["Container"]["Environment"] | {"HF_MODEL_ID": "-"} == {
        "HF_MODEL_ID": "-",
        "OPTION_ENABLE_LORA": "true",
        "OPTION_MAX_MODEL_LEN": "1024",
        "OPTION_MAX_LORAS": "8",
        "OPTION_MAX_LORA_RANK": "64",
        "OPTION_MAX_CPU_LORAS": "32",
        "OPTION_TENSOR_PARALLEL_DEGREE": "1",
    }
    assert spec["Container"]["Environment"]["HF_MODEL_ID"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert spec["ComputeResourceRequirements"]["NumberOfAcceleratorDevicesRequired"] == 1

    (rule,) = promotion_rules(template)
    assert rule["Properties"]["EventPattern"] == {
        "source": ["aws.sagemaker"],
        "detail-type": ["SageMaker Model Package State Change"],
        "detail": {"ModelPackageGroupName": ["peftops-adapters-dev"]},
    }
    (deployer,) = [
        f for f in resources(template, "AWS::Lambda::Function").values()
        if f["Properties"]["Handler"] == "deployer.handler"
    ]  # fmt: skip
    assert deployer["Properties"]["Environment"]["Variables"] == {
        "LIFECYCLE_STAGE": "staging",
        "MODEL_PACKAGE_GROUP": "peftops-adapters-dev",
        "ENDPOINT_NAME": endpoint_name,
        "VARIANT_NAME": "AllTraffic",
        "BASE_COMPONENT": f"{endpoint_name}-base",
        "MAX_LORA_RANK": "64",  # the base component's OPTION_MAX_LORA_RANK
    }
    # One deployment at a time without reserving concurrency (new accounts' quota of 10
    # refuses any reservation): the rule feeds a FIFO queue, one message group per stage,
    # that the deployer reads one message at a time; a crashed deployment is not rerun.
    assert "ReservedConcurrentExecutions" not in deployer["Properties"]
    assert deployer["Properties"]["Timeout"] == 900
    queues = resources(template, "AWS::SQS::Queue")
    (target,) = rule["Properties"]["Targets"]
    assert target["SqsParameters"] == {"MessageGroupId": "staging"}
    queue = queues[target["Arn"]["Fn::GetAtt"][0]]["Properties"]
    assert queue["FifoQueue"] is True and queue["ContentBasedDeduplication"] is True
    assert queue["VisibilityTimeout"] >= 6 * 900 and "KmsMasterKeyId" in queue
    assert queue["RedrivePolicy"]["maxReceiveCount"] == 1
    dead = queues[queue["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]]["Properties"]
    assert dead["FifoQueue"] is True and "KmsMasterKeyId" in dead
    (mapping,) = resources(template, "AWS::Lambda::EventSourceMapping").values()
    assert mapping["Properties"]["BatchSize"] == 1
    assert mapping["Properties"]["EventSourceArn"] == target["Arn"]
    # EventBridge may send there, and use the key, for this rule only (no other account's).
    rule_arn = f"arn:aws:events:us-east-1:123456789012:rule/{rule['Properties']['Name']}"
    this_rule = {"ArnEquals": {"aws:SourceArn": rule_arn}}
    sent = [
        plain(st)
        for policy in resources(template, "AWS::SQS::QueuePolicy").values()
        for st in policy["Properties"]["PolicyDocument"]["Statement"]
        if st["Effect"] == "Allow"
    ]
    assert sent == [
        {
            "Sid": "PromotionEventsOfThisStage",
            "Action": "sqs:SendMessage",
            "Condition": this_rule,
            "Effect": "Allow",
            "Principal": {"Service": "events.amazonaws.com"},
            "Resource": target["Arn"],
        }
    ]
    key_statements = [
        plain(st)
        for key in resources(template, "AWS::KMS::Key").values()
        for st in key["Properties"]["KeyPolicy"]["Statement"]
        if "events.amazonaws.com" in json.dumps(st.get("Principal"))
    ]
    assert [st.get("Condition") for st in key_statements] == [this_rule]
    role_id = stack.get_logical_id(stack.serving.deployer.role.node.default_child)
    (policy,) = resources(template, "AWS::IAM::Role")[role_id]["Properties"]["Policies"]
    statements = {s["Sid"]: plain(s) for s in policy["PolicyDocument"]["Statement"]}
    actions = {sid: s["Action"] for sid, s in statements.items()}
    assert actions == {
        "ReadAndRecordVersions": ["sagemaker:DescribeModelPackage", "sagemaker:UpdateModelPackage"],
        # Actions and resources sorted: cdk.json's @aws-cdk/aws-iam:minimizePolicies.
        "FindVersionsAndComponents": ["sagemaker:ListInferenceComponents", "sagemaker:Search"],
        # A component per version: created, watched, tagged, deleted; never updated in place.
        "ManageAdapterComponents": [
            "sagemaker:AddTags",
            "sagemaker:CreateInferenceComponent",
            "sagemaker:DeleteInferenceComponent",
            "sagemaker:DescribeInferenceComponent",
            "sagemaker:ListTags",
        ],
        "MarkPromotedAdapters": "s3:PutObjectTagging",
        "ReadSmokeRequests": "s3:GetObject",
        "DecryptSmokeRequests": "kms:Decrypt",
        "SmokeTest": "sagemaker:InvokeEndpoint",
        "WriteOwnLogs": ["logs:CreateLogStream", "logs:PutLogEvents"],
    }
    assert json.dumps(statements["MarkPromotedAdapters"]["Resource"]).endswith(
        '/pipelines/peftops-adapter-dev/models/*"]]}'
    )
    sagemaker = "arn:aws:sagemaker:us-east-1:123456789012"
    assert statements["SmokeTest"]["Resource"] == [
        f"{sagemaker}:endpoint/{endpoint_name}",
        f"{sagemaker}:inference-component/{endpoint_name}-*",
    ]
    assert statements["ManageAdapterComponents"]["Resource"] == [
        f"{sagemaker}:endpoint/{endpoint_name}",
        f"{sagemaker}:inference-component/{endpoint_name}-*",
    ]
    # An error is recorded by the deployer itself; Lambda must not run the deployment again.
    (invoke_config,) = resources(template, "AWS::Lambda::EventInvokeConfig").values()
    assert invoke_config["Properties"]["MaximumRetryAttempts"] == 0
    # The deployer's code is the project's module, shipped as the other functions are.
    assert (REPO / "pipelines" / "functions" / "deployer.py").is_file()


def test_an_instance_type_without_local_storage_gets_the_endpoint_key(tmp_path: Path) -> None:
    template, stack = synth_variant(
        tmp_path,
        stage={"serving": {"lifecycle_stage": "production", "instance_type": "ml.p3.2xlarge"}},
    )
    (config,) = resources(template, "AWS::SageMaker::EndpointConfig").values()
    key_id = stack.get_logical_id(stack.storage.key.node.default_child)
    assert config["Properties"]["KmsKeyId"] == {"Fn::GetAtt": [key_id, "Arn"]}
    (endpoint,) = resources(template, "AWS::SageMaker::Endpoint").values()
    assert endpoint["Properties"]["EndpointName"] == "peftops-adapter-dev-production"


@pytest.mark.parametrize(
    ("serving", "message"),
    [
        ({"lifecycle_stage": "qa"}, "serving.lifecycle_stage must be one of"),
        ({"instance_type": "g5.2xlarge"}, "is not an ml.* type"),
        ({"max_loras": 0}, "at least 1"),
        # vLLM's max_lora_rank takes only these (vllm/config/lora.py).
        ({"max_lora_rank": 48}, r"vLLM takes one of \(1, 8, 16, 32, 64, 128, 256, 320, 512\)"),
        ({"max_lora_rank": 8}, "pipeline.lora_r 16 is above serving.max_lora_rank 8"),
        ({"replicas": 2}, "unexpected keyword argument 'replicas'"),
        # peftops-adapter-dev-production is 30; a pipeline name 17 longer leaves no room for
        # `-<task>-<version>` within an inference component name's 63 characters.
        (
            {"lifecycle_stage": "production"},
            "shorten pipeline.name to at most 35 characters",
        ),
        ({"lifecycle_stage": "staging"}, "use a lower-case pipeline.name"),
    ],
)
def test_bad_serving_settings_are_refused_at_synth(serving: dict, message: str) -> None:
    stage = {**STAGES["dev"], "serving": serving}
    if "shorten" in message:
        stage["pipeline"] = {**stage["pipeline"], "name": "peftops-adapter-dev-" + "x" * 17}
    if "lower-case" in message:
        stage["pipeline"] = {**stage["pipeline"], "name": "Peftops-Adapter"}
    with pytest.raises(ValueError, match=message):
        stage_settings({"dev": stage}, "dev")


def statements_of(template: Template, kind: str, document: str) -> dict[str, Any]:
    found = {}
    for resource in resources(template, kind).values():
        for statement in resource["Properties"][document]["Statement"]:
            if "Sid" in statement:
                found[statement["Sid"]] = plain(statement)
    return found


def test_promotion_accounts_read_only_deployed_adapters_and_only_when_named(
    dev, tmp_path: Path
) -> None:
    template, _, _ = dev
    bucket = statements_of(template, "AWS::S3::BucketPolicy", "PolicyDocument")
    key = statements_of(template, "AWS::KMS::Key", "KeyPolicy")
    assert not [sid for sid in (*bucket, *key) if sid.startswith("PromotionAccounts")]
    (group,) = resources(template, "AWS::SageMaker::ModelPackageGroup").values()
    assert "ModelPackageGroupPolicy" not in group["Properties"]

    shared, _ = synth_variant(tmp_path, stage={"promotion_account_ids": ["210987654321"]})
    account = {"AWS": "arn:aws:iam::210987654321:root"}
    read = statements_of(shared, "AWS::S3::BucketPolicy", "PolicyDocument")[
        "PromotionAccountsReadPromotedAdapters"
    ]
    assert read["Principal"] == account and read["Action"] == "s3:GetObject"
    assert json.dumps(read["Resource"]).endswith('/pipelines/peftops-adapter-dev/models/*"]]}')
    assert read["Condition"] == {
        "StringEquals": {"s3:ExistingObjectTag/peftops-promoted": "true"}
    }  # the deployer's tag: what was deployed to a stage, nothing else
    decrypt = statements_of(shared, "AWS::KMS::Key", "KeyPolicy")[
        "PromotionAccountsDecryptPromotedAdapters"
    ]
    assert decrypt["Principal"] == account and decrypt["Action"] == "kms:Decrypt"
    assert decrypt["Condition"] == {
        "StringEquals": {"kms:ViaService": "s3.us-east-1.amazonaws.com"}
    }
    (group,) = resources(shared, "AWS::SageMaker::ModelPackageGroup").values()
    (granted,) = group["Properties"]["ModelPackageGroupPolicy"]["Statement"]
    assert plain(granted["Principal"]["AWS"]) == ["arn:aws:iam::210987654321:root"]
    # Read only: a version's approval or stage set from there would reach the deployers.
    assert granted["Action"] == [
        "sagemaker:DescribeModelPackageGroup",
        "sagemaker:DescribeModelPackage",
        "sagemaker:ListModelPackages",
    ]


def test_the_readme_names_everything_cdk_destroy_keeps(dev, prod) -> None:
    """Each resource a `cdk destroy` retains has its row in the README (what it costs, how to
    delete it) and a stack output that names it; a new retained resource fails this test."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("**Tear a stage down.**", 1)[1].split("\n\n## ", 1)[0]
    rows = {
        "AWS::S3::Bucket": ["`BucketName`", "`AccessLogBucketName`"],
        "AWS::KMS::Key": ["`KeyArn`"],
    }
    for template, _, _ in (dev, prod):
        document = template.to_json()
        kept = [
            (name, r["Type"])
            for name, r in document["Resources"].items()
            if r.get("DeletionPolicy") == "Retain"
        ]
        assert sorted(t for _, t in kept) == ["AWS::KMS::Key", "AWS::S3::Bucket", "AWS::S3::Bucket"]
        named = {
            output: value["Value"].get("Ref") or value["Value"]["Fn::GetAtt"][0]
            for output, value in document["Outputs"].items()
            if isinstance(value["Value"], dict)
        }
        for name, kind in kept:
            (output,) = [o for o, resource in named.items() if resource == name]
            assert f"`{output}`" in rows[kind], (name, output)
    for cells in rows.values():
        for cell in cells:
            assert f"| {cell}" in section or f"(`{cell.strip('`')}`)" in section, cell
    assert "the code assets in CDK's bootstrap bucket" in section
    assert "$1 a month" in section and "schedule-key-deletion" in section
