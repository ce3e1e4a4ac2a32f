"""Serving registered adapters: many task adapters on one shared base model, on a laptop
(`peftops serve`) with the same request and response bodies as the cloud's endpoint."""
