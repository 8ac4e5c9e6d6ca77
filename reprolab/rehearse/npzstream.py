"""Write an ``.npz`` one chunk at a time, so a 2 GB array never has to exist in memory.

An ``.npz`` is a zip of ``.npy`` members; ``np.load`` reads a stored (uncompressed) member whatever wrote it.
Each member is a ``.npy`` header (the shape is known up front) followed by the raw C-order rows.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from numpy.lib import format as npy


def write_npz_streamed(
    path: Path, members: dict[str, tuple[tuple[int, ...], np.dtype, Iterable[np.ndarray]]]
) -> None:
    """Write ``path`` atomically; each member is (shape, dtype, chunks), chunks concatenating along axis 0."""
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, (shape, dtype, chunks) in members.items():
            dtype = np.dtype(dtype)
            with zf.open(f"{name}.npy", "w", force_zip64=True) as out:
                npy.write_array_header_1_0(
                    out, {"descr": npy.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(shape)}
                )
                rows = 0
                for chunk in chunks:
                    chunk = np.ascontiguousarray(chunk, dtype=dtype)
                    out.write(chunk.tobytes())
                    rows += chunk.shape[0]
                if rows != shape[0]:
                    raise ValueError(f"{path}: member {name} promised {shape[0]} rows, chunks gave {rows}")
    os.replace(tmp, path)
