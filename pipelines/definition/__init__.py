"""The cloud definition: the typed configuration, the offline asset staging, and the builder of
the SageMaker Pipeline's JSON definition."""
