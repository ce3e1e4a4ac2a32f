"""peftops: the SageMaker pipeline's definition, its local stand-in, the model registry, the CLI,
and offline fixtures, one sub-package each. Importing it changes nothing in the process."""
