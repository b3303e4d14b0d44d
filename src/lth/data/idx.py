"""Reader for the IDX format used by MNIST and Fashion-MNIST (gzipped or raw)."""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from lth.errors import LthError

# IDX type code -> big-endian numpy dtype.
IDX_DTYPES: dict[int, str] = {
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}
_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise LthError(f"cannot read IDX file {path}: {exc.strerror or exc}") from None
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise LthError(f"IDX file {path} is not a valid gzip file ({exc})") from None


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (gzip detected from content) into a native-endian numpy array."""
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise LthError(f"{path} is not an IDX file: its magic number must start with two zero bytes")
    code, ndim = data[2], data[3]
    if code not in IDX_DTYPES:
        allowed = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise LthError(f"IDX file {path} has unknown type code 0x{code:02X}; allowed: {allowed}")
    if ndim < 1:
        raise LthError(f"IDX file {path} declares 0 dimensions; at least 1 is required")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise LthError(
            f"IDX file {path} is truncated: header needs {header} bytes for {ndim} dimensions "
            f"but the file has {len(data)}"
        )
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(IDX_DTYPES[code])
    expected = math.prod(dims) * dtype.itemsize
    actual = len(data) - header
    if actual != expected:
        raise LthError(
            f"IDX file {path} has a wrong payload size: dimensions {tuple(dims)} need "
            f"{expected} bytes but it holds {actual}"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="), copy=True)
