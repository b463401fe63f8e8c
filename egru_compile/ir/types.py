"""Tensor types of IR values: a static shape and an element type."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: IR element types and their numpy equivalents.
DTYPES = {"f32": np.float32, "f64": np.float64, "i64": np.int64, "i32": np.int32, "i16": np.int16,
          "i8": np.int8, "bool": np.bool_}


def dtype_of(array: np.ndarray) -> str:
    for name, np_t in DTYPES.items():
        if array.dtype == np_t:
            return name
    raise TypeError(f"unsupported numpy dtype {array.dtype}")


@dataclass(frozen=True)
class TensorType:
    shape: tuple[int, ...]
    dtype: str = "f32"

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        if self.dtype not in DTYPES:
            raise TypeError(f"unknown dtype {self.dtype!r}")

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def np_dtype(self):
        return DTYPES[self.dtype]

    def __str__(self) -> str:
        dims = "x".join(str(s) for s in self.shape)
        return f"tensor<{dims + 'x' if dims else ''}{self.dtype}>"

    @classmethod
    def of(cls, array) -> "TensorType":
        array = np.asarray(array)
        return cls(array.shape, dtype_of(array))
