"""Foundations every stage uses: errors, seeds and devices, shape checks, registries, torchrun."""
