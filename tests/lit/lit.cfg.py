"""lit configuration of the per-pass FileCheck tests: every ``*.ir`` here is a test whose ``// RUN:`` line runs
``egru-compile opt`` and pipes the IR it prints into ``filecheck`` (both from the environment lit runs in).

    lit tests/lit            # or: .venv/bin/lit -v tests/lit
"""
import os
import sys
import tempfile

import lit.formats

config.name = "egru-compile passes"                                         # noqa: F821 (lit's globals)
config.test_format = lit.formats.ShTest(execute_external=False)            # noqa: F821
config.suffixes = [".ir"]                                                   # noqa: F821
config.test_source_root = os.path.dirname(os.path.abspath(__file__))       # noqa: F821
# scratch files of lit go to a temporary folder, not next to the tests
config.test_exec_root = lit_config.params.get(                             # noqa: F821
    "exec_root", os.path.join(tempfile.gettempdir(), f"egru-compile-lit-{os.getuid()}"))
# egru-compile and filecheck: the ones installed next to the Python that runs lit (the project's venv) first
bindir = os.path.dirname(sys.executable)
config.environment["PATH"] = os.pathsep.join(                               # noqa: F821
    [bindir, config.environment.get("PATH", os.environ.get("PATH", ""))])   # noqa: F821
