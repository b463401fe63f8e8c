"""Graph IR: typed values, ops with attributes, constants, explicit recurrent state."""
from .analyses import Analysis, AnalysisError, AnalysisStore
from .graph import Graph, Node, Value
from .interpreter import Interpreter, run_graph
from .ops import OPS, OpError, infer_types
from .printer import print_graph
from .sparse import SparseMatrix
from .stepper import Stepper, observed_step
from .types import TensorType
from .verify import VerificationError, verify

__all__ = ["Graph", "Node", "Value", "Interpreter", "run_graph", "OPS", "OpError", "infer_types",
           "print_graph", "SparseMatrix", "TensorType", "VerificationError", "verify", "Analysis", "AnalysisError",
           "AnalysisStore", "Stepper", "observed_step"]
