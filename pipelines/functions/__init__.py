"""The pipeline's Lambda functions (LambdaStep): standalone modules that need only the Lambda
runtime's boto3, so CDK ships this folder as it is and the local runner calls the same code."""
