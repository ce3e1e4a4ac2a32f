"""The CDK app's constructs: one per unit (storage, roles, registry, pipeline, schedule,
notifications), composed in `PeftopsStack` and configured per stage from cdk.json."""
