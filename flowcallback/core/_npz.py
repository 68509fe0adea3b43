"""The hardened npz reader: arrays of a run directory, loaded without trusting the file.

Each member's declared unpacked size and npy header (shape, dtype, never objects) are checked
against the shape the caller expects (from the graph's or the views' JSON) before any data is
unpacked, so that a compression bomb or a header claiming a huge shape costs no memory; nothing
is unpickled. :mod:`flowcallback.core.store` reads every ``.npz`` through :func:`load_arrays`.
"""
from __future__ import annotations

import math
import os
import zipfile
import zlib
from pathlib import Path
from typing import Dict, Mapping, Optional, Tuple

import numpy as np

from flowcallback.core._files import _open_regular, shown
from flowcallback.exceptions import RunFormatError

__all__ = ["load_arrays", "read_npy_member"]

# What a saved array may hold: integers of at most 8 bytes (flowcallback writes int32).
_MAX_ITEMSIZE = 8
# An npy header is at most numpy's default max_header_size (10,000 bytes) plus magic and length.
_NPY_HEADER_MAX = 10_000 + 16
_CHUNK = 1 << 20


def _npz_size_bound(shapes: Mapping[str, Tuple[int, ...]]) -> int:
    """Largest npz file that arrays of these shapes can make: deflate grows incompressible data by
    well under 1 %, and the zip headers of three members take a few hundred bytes."""
    raw = sum(math.prod(s) * _MAX_ITEMSIZE + _NPY_HEADER_MAX for s in shapes.values())
    return raw + raw // 100 + 64 * 1024


_KIND_NAMES = {"iu": "integers", "f": "floating-point numbers"}


def read_npy_member(z: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path, name: str, shape: Tuple[int, ...],
                     kinds: str = "iu") -> np.ndarray:
    """Read one npy member, checking its declared size and header before unpacking any data.

    Memory stays bounded by ``shape`` whatever the member claims: its unpacked size and npy
    header are checked first, and exactly the bytes that ``shape`` and the dtype need are read.
    ``kinds`` is ``"iu"`` for integer arrays (the graphs' arrays), ``"f"`` for floating-point ones.
    """
    if info.flag_bits & 0x1:
        raise RunFormatError(f"{path}: array {name!r} is encrypted")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise RunFormatError(f"{path}: array {name!r} uses zip compression method {info.compress_type}; "
                             "expected deflate or none (numpy.savez_compressed)")
    bound = math.prod(shape) * _MAX_ITEMSIZE + _NPY_HEADER_MAX
    if info.file_size > bound:
        raise RunFormatError(f"{path}: array {name!r} unpacks to {info.file_size} bytes, more than the {bound} "
                             f"that an array of {_KIND_NAMES[kinds]} of shape {shape} takes; refused")
    with z.open(info) as m:
        version = np.lib.format.read_magic(m)
        if version == (1, 0):
            got, fortran, dtype = np.lib.format.read_array_header_1_0(m)
        elif version == (2, 0):
            got, fortran, dtype = np.lib.format.read_array_header_2_0(m)
        else:
            raise RunFormatError(f"{path}: array {name!r} has npy format version {version}; expected 1.0 or 2.0")
        if dtype.hasobject or dtype.kind not in kinds or dtype.itemsize > _MAX_ITEMSIZE:
            raise RunFormatError(f"{path}: array {name!r} must hold {_KIND_NAMES[kinds]}, has dtype {dtype}")
        if tuple(got) != tuple(shape):
            raise RunFormatError(f"{path}: array shapes do not match the JSON: {name!r} has shape {tuple(got)}, "
                                 f"expected {tuple(shape)} from n_samples and the columns")
        nbytes = math.prod(shape) * dtype.itemsize
        # Grown as data arrives rather than allocated up front: a JSON and a header that agree on
        # a huge shape cost memory only if the member really unpacks to that much.
        buf = bytearray()
        while len(buf) < nbytes:
            chunk = m.read(min(_CHUNK, nbytes - len(buf)))
            if not chunk:
                raise RunFormatError(f"{path}: array {name!r} is truncated ({len(buf)} of {nbytes} bytes)")
            buf += chunk
        if m.read(1):  # also makes zipfile check the CRC
            raise RunFormatError(f"{path}: array {name!r} has data after its {nbytes} bytes")
    a = np.frombuffer(buf, dtype=dtype).reshape(shape, order="F" if fortran else "C")
    return a if dtype.isnative else a.astype(dtype.newbyteorder("="))


def load_arrays(path: Path, shapes: Mapping[str, Tuple[int, ...]],
                 kinds: Optional[Mapping[str, str]] = None) -> Dict[str, np.ndarray]:
    """Load the npz arrays ``shapes`` names, each of the shape given, without trusting the file.

    The file must be a regular file no larger than such arrays can make; each member's declared
    unpacked size and npy header (shape, integer dtype, never objects) are checked before any data
    is unpacked, so a compression bomb or a header claiming a huge shape is refused at no cost.

    Parameters
    ----------
    path : pathlib.Path
    shapes : mapping of str to tuple of int
        The expected arrays and their shapes, from the graph's JSON.
    kinds : mapping of str to str, optional
        ``"f"`` for the arrays that hold floating-point numbers; the others hold integers.

    Raises
    ------
    RunFormatError
        Naming the file and what was expected.
    """
    with _open_regular(path) as f:
        size, limit = os.fstat(f.fileno()).st_size, _npz_size_bound(shapes)
        if size > limit:
            raise RunFormatError(f"{path}: {size} bytes, more than the {limit} that arrays of shapes "
                                 f"{dict(shapes)} can take; refused")
        try:
            with zipfile.ZipFile(f) as z:
                infos = z.infolist()
                found = [i.filename[:-4] if i.filename.endswith(".npy") else i.filename for i in infos]
                if sorted(found) != sorted(shapes) or any(not i.filename.endswith(".npy") for i in infos):
                    raise RunFormatError(f"{path}: expected arrays {sorted(shapes)}, found {shown(sorted(found))}")
                kinds = kinds or {}
                return {name: read_npy_member(z, info, path, name, tuple(shapes[name]), kinds.get(name, "iu"))
                        for name, info in zip(found, infos)}
        except RunFormatError:
            raise
        except (OSError, ValueError, TypeError, SyntaxError, RecursionError, EOFError, NotImplementedError,
                RuntimeError, zipfile.BadZipFile, zlib.error) as exc:
            raise RunFormatError(f"{path}: not a readable npz file ({type(exc).__name__}: {exc})") from None
