"""Command-line front ends: ``outsystemscc`` and ``cloud-connector``."""
