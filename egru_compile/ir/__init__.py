"""Graph IR: typed values, ops with attributes, constants, explicit recurrent state."""
from .graph import Graph, Node, Value
from .interpreter import Interpreter, run_graph
from .ops import OPS, OpError, infer_types
from .printer import print_graph
from .sparse import SparseMatrix
from .types import TensorType
from .verify import VerificationError, verify

__all__ = ["Graph", "Node", "Value", "Interpreter", "run_graph", "OPS", "OpError", "infer_types",
           "print_graph", "SparseMatrix", "TensorType", "VerificationError", "verify"]
