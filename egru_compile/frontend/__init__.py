"""Frontend: checkpoint loaders and torch.export tracing into the IR."""
from .checkpoint import (FORMAT_TAG, FORMAT_VERSION, CheckpointError, SourceModel, load_source,
                         save_checkpoint)
from .trace import FrontendError, export_step, import_exported_program, trace_model

__all__ = ["FORMAT_TAG", "FORMAT_VERSION", "CheckpointError", "SourceModel", "load_source", "save_checkpoint",
           "FrontendError", "export_step", "import_exported_program", "trace_model"]
