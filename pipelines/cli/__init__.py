"""`peftops`, the project's command line: `pipeline` (definition, start, status), `run-local`,
and `models` (list, show, compare, approve, reject); one module per noun."""

from pipelines.cli.app import app, main

__all__ = ["app", "main"]
