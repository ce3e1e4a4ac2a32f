"""Developer tools that are neither product nor tests: make mutation's verdict."""
