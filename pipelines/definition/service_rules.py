"""SageMaker's request rules that botocore's service model does not check, each with its source;
the builder follows them, and the local runner and the tests check every job request against
them, so a definition the service would reject fails here first."""

from __future__ import annotations

import functools
from typing import Any

from sagemaker.core.common_utils import volume_size_supported

# Instance store of the local-NVMe types this project's stages use or document, in GB.
# Source: Amazon EC2 instance types, "Instance store specifications" (g5, g6, p4d, p5).
INSTANCE_STORE_GB = {
    "ml.g5.xlarge": 250,
    "ml.g5.2xlarge": 450,
    "ml.g5.4xlarge": 600,
    "ml.g5.8xlarge": 900,
    "ml.g5.12xlarge": 3800,
    "ml.g5.16xlarge": 1900,
    "ml.g5.24xlarge": 3800,
    "ml.g5.48xlarge": 7600,
    "ml.g6.xlarge": 250,
    "ml.g6.2xlarge": 450,
    "ml.g6.4xlarge": 600,
    "ml.g6.8xlarge": 900,
    "ml.g6.12xlarge": 3760,
    "ml.g6.16xlarge": 1880,
    "ml.g6.24xlarge": 3760,
    "ml.g6.48xlarge": 7520,
    "ml.p4d.24xlarge": 8000,
    "ml.p5.48xlarge": 30720,
}


class RequestRuleError(ValueError):
    """A request the service would refuse; the message names the step, the rule and the fix."""


def has_local_storage(instance_type: str) -> bool:
    """Whether SageMaker mounts the instance's NVMe store instead of an EBS volume. The SDK
    keeps the family list (any family with a "d", and g5, g6, g7e, p5, p6-b200, trn1, trn2)."""
    return not volume_size_supported(instance_type)


def volume_kms_key(instance_type: str, key_arn: str) -> str | None:
    """The volume key to send: none on local-storage instances, whose NVMe store is encrypted
    at rest by the hardware (see `resource_violations`)."""
    return None if has_local_storage(instance_type) else key_arn


def resource_violations(
    step: str, instance_type: Any, volume_size_gb: Any, volume_kms_key_id: Any
) -> list[str]:
    """The rules of a job's compute resources (training ResourceConfig, processing
    ProcessingClusterConfig)."""
    if not isinstance(instance_type, str):
        # The rules below depend on the instance type, so it must be known when the
        # definition is built: a pipeline parameter cannot be checked (nor can the SDK's).
        return [f"{step}: the instance type is {instance_type!r}, not a literal ml.* type"]
    found = []
    if volume_kms_key_id and has_local_storage(instance_type):
        # API reference, ResourceConfig.VolumeKmsKeyId and ProcessingClusterConfig.VolumeKmsKeyId:
        # "You can't request a VolumeKmsKeyId when using an instance type with local storage."
        found.append(
            f"{step}: VolumeKmsKeyId on {instance_type}, which has local NVMe storage; "
            "SageMaker refuses it there (the store is encrypted by the hardware): leave it out"
        )
    store = INSTANCE_STORE_GB.get(instance_type)
    if store is not None and isinstance(volume_size_gb, int) and volume_size_gb > store:
        # API reference, ResourceConfig.VolumeSizeInGB: on instances with NVMe storage the
        # available storage is fixed to the instance store; a larger request is refused.
        found.append(
            f"{step}: VolumeSizeInGB {volume_size_gb} exceeds {instance_type}'s "
            f"{store} GB instance store; lower train_volume_gb"
        )
    return found


# Request fields that hold S3 locations, in every request the pipeline makes.
S3_URI_FIELDS = ("S3Uri", "S3OutputPath", "ModelDataUrl")


def s3_uri_problem(uri: str) -> str | None:
    """What is wrong with an S3 location, if anything. The API reference's pattern for these
    fields (`^(https|s3)://([^/]+)/?(.*)$`) accepts any key; the rule here is the S3 User
    Guide's ("Naming Amazon S3 objects"): a key is a path of named segments. A `//` makes an
    empty-named folder, and a URI inside a key (`.../preprocess/s3://bucket/...`) is a key
    nobody can read back from its lineage. S3Prefix inputs match keys by literal prefix, so
    such a key also misses the objects a reader expects."""
    if not uri.startswith("s3://"):
        return "is not an s3:// URI"
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not bucket:
        return "names no bucket"
    if "://" in key:
        return "holds another URI inside its key"
    if "//" in key:
        return "has an empty path segment (//) in its key"
    return None


def s3_locations(node: Any, where: str = "") -> list[tuple[str, Any]]:
    """(field path, value) of every S3 location field in a request."""
    found: list[tuple[str, Any]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{where}.{key}" if where else key
            if key in S3_URI_FIELDS:
                found.append((path, value))
            else:
                found += s3_locations(value, path)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += s3_locations(value, f"{where}[{index}]")
    return found


def rendered(value: Any, defaults: dict[str, Any]) -> str | None:
    """A location as the definition builds it: literal text, parameters at their defaults,
    other references (a step's output location, a job name) as a placeholder: a location of
    its own where a Join starts with it, one segment elsewhere. None for a bare reference."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Std:Join" in value:
        join = value["Std:Join"]
        parts = []
        for index, part in enumerate(join["Values"]):
            if isinstance(part, dict) and part.get("Get", "").startswith("Parameters."):
                parts.append(str(defaults.get(part["Get"].removeprefix("Parameters."), "value")))
            elif isinstance(part, dict):
                placeholder = "s3://reference/value" if index == 0 else "value"
                parts.append(rendered(part, defaults) or placeholder)
            else:
                parts.append(str(part).lower() if isinstance(part, bool) else str(part))
        return join["On"].join(parts)
    return None


def uri_violations(step: str, request: dict[str, Any], defaults: dict[str, Any]) -> list[str]:
    found = []
    for path, value in s3_locations(request):
        uri = rendered(value, defaults)
        problem = s3_uri_problem(uri) if uri is not None else None
        if problem:
            found.append(f"{step}: {path} {uri!r} {problem}")
    return found


@functools.cache
def _input_shape(operation: str) -> Any:
    import botocore.session

    model = botocore.session.get_session().get_service_model("sagemaker")
    return model.operation_model(operation).input_shape


def length_violations(
    step: str, operation: str, request: dict[str, Any], defaults: dict[str, Any]
) -> list[str]:
    """Every string and list of the request against its shape's maximum: botocore checks
    types and minimums before sending, not maximums, which the service enforces (a container
    argument of 257 characters is refused when the job starts). Text built at run time is
    measured as `rendered` builds it, parameters at their defaults."""
    found: list[str] = []

    def walk(shape: Any, value: Any, path: str) -> None:
        limit = shape.metadata.get("max")
        if shape.type_name == "structure" and isinstance(value, dict):
            for key, member in value.items():
                if key in shape.members:
                    walk(shape.members[key], member, f"{path}.{key}" if path else key)
        elif shape.type_name == "list" and isinstance(value, list):
            if limit is not None and len(value) > limit:
                found.append(f"{step}: {path} holds {len(value)} items; the service takes {limit}")
            for index, item in enumerate(value):
                walk(shape.member, item, f"{path}[{index}]")
        elif shape.type_name == "map" and isinstance(value, dict):
            for key, item in value.items():
                walk(shape.key, key, f"{path} key")
                walk(shape.value, item, f"{path}[{key!r}]")
        elif shape.type_name == "string":
            text = rendered(value, defaults)
            if text is not None and limit is not None and len(text) > limit:
                found.append(
                    f"{step}: {path} is {len(text)} characters; the service takes at most {limit}"
                )

    walk(_input_shape(operation), request, "")
    return found


def request_violations(
    step: str, operation: str, request: dict[str, Any], defaults: dict[str, Any]
) -> list[str]:
    """The rules every job request keeps: its S3 locations and the API's maximum lengths."""
    return uri_violations(step, request, defaults) + length_violations(
        step, operation, request, defaults
    )


def compute_violations(step: str, resources: dict[str, Any]) -> list[str]:
    """`resource_violations` of a training ResourceConfig or a processing ClusterConfig, which
    name their fields alike."""
    return resource_violations(
        step,
        resources.get("InstanceType"),
        resources.get("VolumeSizeInGB"),
        resources.get("VolumeKmsKeyId"),
    )


def training_job_violations(
    step: str, request: dict[str, Any], defaults: dict[str, Any] | None = None
) -> list[str]:
    """CreateTrainingJob's request (a TrainingStep's Arguments)."""
    return compute_violations(step, request.get("ResourceConfig", {})) + request_violations(
        step, "CreateTrainingJob", request, defaults or {}
    )


def processing_job_violations(
    step: str, request: dict[str, Any], defaults: dict[str, Any] | None = None
) -> list[str]:
    """CreateProcessingJob's request (a ProcessingStep's Arguments)."""
    cluster = request.get("ProcessingResources", {}).get("ClusterConfig", {})
    return compute_violations(step, cluster) + request_violations(
        step, "CreateProcessingJob", request, defaults or {}
    )


def registration_violations(
    step: str, request: dict[str, Any], defaults: dict[str, Any] | None = None
) -> list[str]:
    """CreateModelPackage's request (a RegisterModel step's Arguments)."""
    return request_violations(step, "CreateModelPackage", request, defaults or {})


JOB_RULES = {
    "Training": training_job_violations,
    "Processing": processing_job_violations,
    "RegisterModel": registration_violations,
}


def steps_of(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every step of a definition, those inside condition branches too."""
    found = []
    for step in steps:
        found.append(step)
        if step["Type"] == "Condition":
            arguments = step["Arguments"]
            found += steps_of(arguments.get("IfSteps", []) + arguments.get("ElseSteps", []))
    return found


def definition_violations(definition: dict[str, Any]) -> list[str]:
    """The rules over every job step of a pipeline definition, as built (before any
    parameter is resolved: what the rules read must be literal there)."""
    defaults = {p["Name"]: p.get("DefaultValue") for p in definition.get("Parameters", [])}
    return [
        violation
        for step in steps_of(definition["Steps"])
        if step["Type"] in JOB_RULES
        for violation in JOB_RULES[step["Type"]](step["Name"], step["Arguments"], defaults)
    ]


def check_job(step_type: str, step: str, request: dict[str, Any]) -> None:
    """Raise `RequestRuleError` if the job request breaks a rule."""
    rules = JOB_RULES.get(step_type)
    found = rules(step, request) if rules else []
    if found:
        raise RequestRuleError("; ".join(found))
