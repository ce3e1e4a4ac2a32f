"""`python -m pipelines.cli`: the same as the `peftops` command."""

from pipelines.cli.app import main

main()
