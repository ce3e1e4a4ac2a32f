"""The local stand-in for SageMaker Pipelines: the step loop, expressions, S3 mirror, jobs and
presets that run the cloud's own definition on this machine."""
