"""TVM target: TIR kernels for batch-1 event-driven EGRU inference.

`kernels` imports `tvm` lazily, so this package imports without TVM installed (building or running
kernels then raises ModuleNotFoundError)."""
from .kernels import (EGRUKernelSpec, TVMStepRunner, build_egru_step, build_kernel_library,
                      choose_index_dtype, default_target, egru_step_source, from_input_major, load_module,
                      pack_layer, reference_run, reference_step, step_arg_names, to_input_major)

__all__ = ["EGRUKernelSpec", "TVMStepRunner", "build_egru_step", "build_kernel_library", "choose_index_dtype",
           "default_target", "egru_step_source", "from_input_major", "load_module", "pack_layer",
           "reference_run", "reference_step", "step_arg_names", "to_input_major"]


def compile_tvm(graph, source, out_dir, options):
    """Entry point of ``--target tvm`` (see target.py)."""
    from .target import compile_tvm as _compile
    return _compile(graph, source, out_dir, options)
