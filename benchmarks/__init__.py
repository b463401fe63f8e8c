"""Benchmarks of egru-compile (not part of the installed package). Run each as a module from the repository
root with the project's environment, e.g. ``.venv/bin/python -m benchmarks.bench_onnx --rounds 7``; the shared
model building, threshold calibration and the interleaved timer are `benchmarks.common`."""
