"""Where the jobs' files are: the training scripts on this machine, and the paths their
containers keep inputs, outputs and code at."""

from __future__ import annotations

from pathlib import Path

from training_scripts import contracts

SCRIPTS_DIR = Path(contracts.__file__).resolve().parent  # training_scripts/
JOB_REQUIREMENTS = "requirements.lock"  # make lock; relative to SCRIPTS_DIR
PROCESSING = "/opt/ml/processing"
# Where the training container unpacks the code channel (sm_train.sh: cd, tar -xzf).
CONTAINER_CODE_DIR = "/opt/ml/input/data/code"
