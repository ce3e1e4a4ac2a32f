"""CDK entry point: reads the stage and the environment once, builds the stack.

npx cdk synth -c stage=prod
"""

import os
import sys

import aws_cdk as cdk
import cdk_nag

from infra.stack import PeftopsStack
from pipelines.definition.stages import deployment_region, stage_settings
from training_scripts.logs import setup_logging

setup_logging()  # the SDK's INFO lines stay out of `cdk synth`, as out of the CLI
app = cdk.App()
stage = app.node.try_get_context("stage") or "dev"
try:
    settings = stage_settings(app.node.try_get_context("stages"), stage)
except ValueError as err:  # a stage setting or task spec that cannot deploy: one line
    sys.exit(f"peftops: error: {err}")
region, note = deployment_region(settings, os.environ.get("CDK_DEFAULT_REGION"))
if note:
    print(note, file=sys.stderr)
PeftopsStack(
    app,
    f"Peftops-{stage}",
    settings=settings,
    env=cdk.Environment(account=os.environ.get("CDK_DEFAULT_ACCOUNT"), region=region),
    description=f"peftops ({stage}): PEFT fine-tuning pipeline on SageMaker",
)
cdk.Validations.of(app).add_plugins(cdk_nag.AwsSolutionsChecks(app))
app.synth()
