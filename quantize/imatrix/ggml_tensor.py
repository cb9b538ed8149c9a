"""ggml's `struct ggml_tensor` mirrored in ctypes, for the graph callback (`cb_eval`).

llama-cpp-python binds the callback's type but not the tensor it receives. The layout below is
ggml.h's as vendored in llama-cpp-python 0.3.36 (GGML_MAX_DIMS 4, GGML_MAX_SRC 10,
GGML_MAX_OP_PARAMS 64, GGML_MAX_NAME 64); `check_layout` compares it with the loaded library
(ggml_tensor_overhead() is the tensor's size plus a 32-byte ggml_object, and ggml_op_name names
the two op numbers used here) so that another llama.cpp fails loudly instead of reading garbage."""

from __future__ import annotations

import ctypes
import functools

import numpy as np

from quantize.errors import ImatrixError

GGML_MAX_DIMS = 4
GGML_MAX_SRC = 10
GGML_MAX_OP_PARAMS = 64
GGML_MAX_NAME = 64
GGML_OBJECT_SIZE = 32  # struct ggml_object: offs, size, next, type, padding[4]

GGML_TYPE_F32 = 0
GGML_TYPE_I32 = 26
GGML_OP_MUL_MAT = 29
GGML_OP_MUL_MAT_ID = 30


class GGMLTensor(ctypes.Structure):
    """struct ggml_tensor (ggml.h)."""


GGMLTensor._fields_ = [
    ("type", ctypes.c_int),
    ("buffer", ctypes.c_void_p),
    ("ne", ctypes.c_int64 * GGML_MAX_DIMS),
    ("nb", ctypes.c_size_t * GGML_MAX_DIMS),
    ("op", ctypes.c_int),
    ("op_params", ctypes.c_int32 * (GGML_MAX_OP_PARAMS // 4)),
    ("flags", ctypes.c_int32),
    ("src", ctypes.POINTER(GGMLTensor) * GGML_MAX_SRC),
    ("view_src", ctypes.POINTER(GGMLTensor)),
    ("view_offs", ctypes.c_size_t),
    ("data", ctypes.c_void_p),
    ("name", ctypes.c_char * GGML_MAX_NAME),
    ("extra", ctypes.c_void_p),
    ("padding", ctypes.c_char * 8),
]

OP_OFFSET = GGMLTensor.op.offset  # read alone on every node the scheduler asks about


@functools.cache
def libggml() -> ctypes.CDLL:
    """The ggml library llama-cpp-python loaded, with the few functions used here typed."""
    from llama_cpp import _ggml

    lib = _ggml.libggml
    lib.ggml_tensor_overhead.restype = ctypes.c_size_t
    lib.ggml_tensor_overhead.argtypes = []
    lib.ggml_op_name.restype = ctypes.c_char_p
    lib.ggml_op_name.argtypes = [ctypes.c_int]
    lib.ggml_backend_buffer_is_host.restype = ctypes.c_bool
    lib.ggml_backend_buffer_is_host.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_tensor_get.restype = None
    lib.ggml_backend_tensor_get.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t]
    return lib


@functools.cache
def check_layout() -> None:
    """Refuse to run against a ggml whose tensor struct or op numbering differs from the mirror."""
    lib = libggml()
    size = lib.ggml_tensor_overhead() - GGML_OBJECT_SIZE
    ops = lib.ggml_op_name(GGML_OP_MUL_MAT), lib.ggml_op_name(GGML_OP_MUL_MAT_ID)
    if size != ctypes.sizeof(GGMLTensor) or ops != (b"MUL_MAT", b"MUL_MAT_ID"):
        raise ImatrixError(
            f"this llama.cpp's ggml_tensor ({size} bytes, ops {ops}) is not the one edgellm mirrors "
            f"({ctypes.sizeof(GGMLTensor)} bytes): reinstall llama-cpp-python 0.3.36"
        )


def tensor_at(address: int) -> GGMLTensor:
    return GGMLTensor.from_address(address)


def op_at(address: int) -> int:
    return ctypes.c_int.from_address(address + OP_OFFSET).value


def address_of(pointer: object) -> int:
    """A POINTER(GGMLTensor) field as an integer address (0 for NULL)."""
    return ctypes.cast(pointer, ctypes.c_void_p).value or 0


def name_of(tensor: GGMLTensor) -> str:
    return tensor.name.decode("utf-8", errors="replace")


def as_array(address: int, dtype: type[np.generic]) -> np.ndarray:
    """The tensor's elements as an array indexed [i3, i2, i1, i0] (ggml's dims reversed) using its
    byte strides: a view of host memory, or a copy read through its backend otherwise (a GPU)."""
    t = tensor_at(address)
    itemsize = np.dtype(dtype).itemsize
    if t.nb[0] != itemsize:
        raise ImatrixError(f"{name_of(t)}: element stride {t.nb[0]} is not {itemsize}")
    shape = tuple(int(t.ne[i]) for i in reversed(range(GGML_MAX_DIMS)))
    strides = tuple(int(t.nb[i]) for i in reversed(range(GGML_MAX_DIMS)))
    nbytes = itemsize + sum((int(t.ne[i]) - 1) * int(t.nb[i]) for i in range(GGML_MAX_DIMS))
    lib = libggml()
    if not t.buffer or lib.ggml_backend_buffer_is_host(t.buffer):  # no buffer: a plain ggml context's memory
        buffer: object = (ctypes.c_char * nbytes).from_address(t.data)
    else:
        buffer = ctypes.create_string_buffer(nbytes)
        lib.ggml_backend_tensor_get(address, buffer, 0, nbytes)
    return np.ndarray(shape, dtype=dtype, buffer=buffer, strides=strides)
