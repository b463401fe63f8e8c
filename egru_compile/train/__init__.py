"""Training, pruning and activity/MAC measurement for EGRU language models.

Kept import-cheap: `egru_compile.train.cli` only needs click at import time; torch is imported by the
command when it runs. Import the heavy pieces from their modules (`.trainer`, `.prune`, `.metrics`,
`.baselines`, `.data`).
"""

__all__ = ["cli"]
