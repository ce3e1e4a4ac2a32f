"""The code of every SageMaker job (preprocess, train, evaluate) and the files they hand to the
pipeline; each module also runs as a plain script inside the job's container."""

# Imported with the package: it quiets bitsandbytes' import-time warning before any module
# loads bitsandbytes (the scripts import it first when run as files).
from . import logs  # noqa: F401
