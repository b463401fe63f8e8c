"""TVM target: TIR kernels for event-driven EGRU inference (batch 1 and batched streams).

Modules: `layout` (input-major CSR and the packed layer, f32 / f16 / int8 values, numpy only), `spec` (what a
step kernel is compiled for, the LLVM target), `tir` (TIR building blocks), `step` (the fused ``egru_step`` /
``egru_run`` / ``egru_score``), `streams` (B streams per call: ``egru_streams_run`` / ``egru_streams_score``),
`library` (stand-alone kernels with symbolic sizes), `step_runner` (in-process executor), `precision` (the value
dtypes of an artifact), `target` (``--target tvm``) and `runner` (artifact runner). ``tvm`` is imported
lazily, so this package imports without TVM installed (building or running kernels then raises
ModuleNotFoundError)."""
from .layout import choose_index_dtype, from_input_major, pack_layer, to_input_major
from .library import build_kernel_library, load_module
from .spec import EGRUKernelSpec, default_target
from .step import build_egru_step, step_arg_names, step_functions
from .step_runner import TVMStepRunner

__all__ = ["EGRUKernelSpec", "TVMStepRunner", "build_egru_step", "build_kernel_library", "choose_index_dtype",
           "default_target", "from_input_major", "load_module", "pack_layer", "step_arg_names", "step_functions",
           "to_input_major"]


def compile_tvm(graph, source, out_dir, options):
    """Entry point of ``--target tvm`` (see target.py)."""
    from .target import compile_tvm as _compile
    return _compile(graph, source, out_dir, options)
