"""Length-prefixed messages between the training process and the LRP worker.

A message is a JSON header plus NumPy arrays in ``.npy`` format. Nothing is pickled: arrays are
read back with ``allow_pickle=False``, so neither side can make the other run code.
"""
from __future__ import annotations

import io
import json
import struct
from typing import BinaryIO, List, Sequence, Tuple

import numpy as np

_LEN = struct.Struct("<Q")


def _read_exact(f: BinaryIO, n: int) -> bytes:
    chunks, left = [], n
    while left:
        b = f.read(left)
        if not b:
            raise EOFError("the other process closed the channel")
        chunks.append(b)
        left -= len(b)
    return b"".join(chunks)


def send(f: BinaryIO, header: dict, arrays: Sequence[np.ndarray] = ()) -> None:
    payloads = []
    for a in arrays:
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(a), allow_pickle=False)
        payloads.append(buf.getvalue())
    head = json.dumps(dict(header, _sizes=[len(p) for p in payloads])).encode("utf-8")
    f.write(_LEN.pack(len(head)))
    f.write(head)
    for p in payloads:
        f.write(p)
    f.flush()


def recv(f: BinaryIO) -> Tuple[dict, List[np.ndarray]]:
    (n,) = _LEN.unpack(_read_exact(f, _LEN.size))
    header = json.loads(_read_exact(f, n).decode("utf-8"))
    arrays = [np.load(io.BytesIO(_read_exact(f, s)), allow_pickle=False) for s in header.pop("_sizes")]
    return header, arrays
