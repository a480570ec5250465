"""Scoring: metrics (Dice, IoU, ...), map -> mask thresholds and their search, baselines."""
