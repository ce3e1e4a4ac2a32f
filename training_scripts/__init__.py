"""The code of every SageMaker job (preprocess, train, evaluate) and the files they hand to the
pipeline; each module also runs as a plain script inside the job's container."""
