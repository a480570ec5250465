"""wsslib: weakly supervised segmentation from cheap supervision.

The package follows the data's way through the pipeline:

``data`` -> ``models`` -> ``uncertainty`` / ``cams`` -> ``thresholds`` / ``fusion`` /
``aax`` -> ``metrics`` -> ``report``.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
