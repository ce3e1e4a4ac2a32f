"""peftops: the SageMaker pipeline, its local runner, the model registry clients and the CLI."""
