"""Hostile .npz files for the samples limit: a real zip bomb, made in about a second.

`zip_bomb_npz` writes an .npz whose one member is a valid .npy of many GiB of zeros, deflated
about 1000 to 1. Compressing that many zeros would take minutes, so one 16 MiB block is
compressed once, ending in a full flush, which resets deflate's state: every further block of
zeros then compresses to the very same bytes, which are written again and again. The CRC is
computed with zlib's crc32_combine arithmetic. The zip64 records are written by hand, since
zipfile would compress every byte itself. `zip_bomb_npz(path, total=...)` at a small size is
read back whole by numpy in the tests, so the construction is checked, not assumed.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np

_CHUNK = 16 << 20


def zip_bomb_npz(path: str, member: str = "input_0.npy", total: int = 20 << 30) -> int:
    """Write the bomb; returns the member's unpacked size (an .npy header plus `total` zeros)."""
    assert total % _CHUNK == 0
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False, "shape": (total,)})
    head = header.getvalue()
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = deflate.compress(head) + deflate.flush(zlib.Z_FULL_FLUSH)
    block = deflate.compress(bytes(_CHUNK)) + deflate.flush(zlib.Z_FULL_FLUSH)
    last = deflate.flush(zlib.Z_FINISH)
    count = total // _CHUNK
    size = len(head) + total
    packed = len(first) + count * len(block) + len(last)
    crc = _crc32_combine(zlib.crc32(head), _crc32_of_zeros(total), total)
    name = member.encode()
    sizes = struct.pack("<HHQQ", 0x0001, 16, size, packed)  # the zip64 extra field
    with open(path, "wb") as out:
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, 0, 8, 0, 33, crc, 0xFFFFFFFF, 0xFFFFFFFF,
                              len(name), len(sizes)) + name + sizes)
        out.write(first)
        for _ in range(count):
            out.write(block)
        out.write(last)
        directory_at = out.tell()
        out.write(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45, 0, 8, 0, 33, crc, 0xFFFFFFFF,
                              0xFFFFFFFF, len(name), len(sizes), 0, 0, 0, 0, 0) + name + sizes)
        directory_size = out.tell() - directory_at
        end64_at = out.tell()
        out.write(struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, 1, 1, directory_size, directory_at))
        out.write(struct.pack("<IIQI", 0x07064B50, 0, end64_at, 1))
        out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, directory_size, directory_at, 0))
    return size


def lying_header_npz(path: str, member: str = "input_0.npy", shape=(2**40,), dtype="<f4") -> None:
    """An .npz whose member's .npy header claims `shape` but holds only 1 KiB of data."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": dtype, "fortran_order": False, "shape": tuple(shape)})
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(member, header.getvalue() + bytes(1024))


def _crc32_of_zeros(n: int) -> int:
    """crc32 of n zero bytes (n a multiple of the chunk), by doubling: a few dozen combines."""
    result, result_len = 0, 0
    block, block_len = zlib.crc32(bytes(_CHUNK)), _CHUNK
    count = n // _CHUNK
    while count:
        if count & 1:
            result, result_len = _crc32_combine(result, block, block_len), result_len + block_len
        block, block_len = _crc32_combine(block, block, block_len), 2 * block_len
        count >>= 1
    return result


def _crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """crc32(A + B) from crc32(A), crc32(B) and len(B): zlib's crc32_combine, in Python."""
    if len2 <= 0:
        return crc1
    odd = [0xEDB88320] + [1 << n for n in range(31)]  # the operator of one zero bit
    even = _square(odd)  # two zero bits
    odd = _square(even)  # four zero bits
    while True:
        even = _square(odd)
        if len2 & 1:
            crc1 = _times(even, crc1)
        len2 >>= 1
        if not len2:
            break
        odd = _square(even)
        if len2 & 1:
            crc1 = _times(odd, crc1)
        len2 >>= 1
        if not len2:
            break
    return crc1 ^ crc2


def _times(matrix: list[int], vector: int) -> int:
    total, i = 0, 0
    while vector:
        if vector & 1:
            total ^= matrix[i]
        vector >>= 1
        i += 1
    return total


def _square(matrix: list[int]) -> list[int]:
    return [_times(matrix, row) for row in matrix]
