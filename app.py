"""CDK entry point: reads the stage and the environment once, builds the stack.

npx cdk synth -c stage=prod
"""

import os

import aws_cdk as cdk
import cdk_nag

from infra.settings import stage_settings
from infra.stack import PeftopsStack

app = cdk.App()
stage = app.node.try_get_context("stage") or "dev"
settings = stage_settings(app.node.try_get_context("stages"), stage)
# The CLI sets CDK_DEFAULT_* from the credentials in use; without them (an offline synth) the
# stage's region from cdk.json still picks the region-specific container images.
region = os.environ.get("CDK_DEFAULT_REGION") or settings.region
PeftopsStack(
    app,
    f"Peftops-{stage}",
    settings=settings,
    env=cdk.Environment(account=os.environ.get("CDK_DEFAULT_ACCOUNT"), region=region),
    description=f"peftops ({stage}): PEFT fine-tuning pipeline on SageMaker",
)
cdk.Validations.of(app).add_plugins(cdk_nag.AwsSolutionsChecks(app))
app.synth()
