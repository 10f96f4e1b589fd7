"""PNG files made by hand: a header and nothing else, or a decompression bomb (a few KB that
claim to decode to gigabytes)."""

import struct
import zlib

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def png_header_only(width: int, height: int, depth: int = 8, color: int = 0) -> bytes:
    """The signature and IHDR of a ``width`` x ``height`` PNG (8-bit grey), no pixel data."""
    return PNG_MAGIC + png_chunk(
        b"IHDR", struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0))


def png_bomb(width: int, height: int) -> bytes:
    """A valid 8-bit grey PNG header for ``width`` x ``height`` and a few KB of compressed
    zero rows (16 of them, or a row's first 100,000 pixels): the header alone says how many
    pixels the file would decode to."""
    compressor = zlib.compressobj(9)
    data = compressor.compress(b"\x00" * (min(width, 100_000) + 1) * 16) + compressor.flush()
    return png_header_only(width, height) + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")
