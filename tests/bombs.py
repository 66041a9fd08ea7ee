"""Build image files whose headers claim sizes their data does not hold.

Decompression bombs for tests: tiny files that a reader trusting the header
would decode into a huge image. Shared by test_image.py and test_faults.py.
"""
import io
import struct
import zlib

import numpy as np
from PIL import Image


def jpeg_claiming(height, width):
    """Return a 16x16 JPEG whose header claims height x width."""
    buf = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(noise).save(buf, 'JPEG', quality=90)
    data = bytearray(buf.getvalue())
    sof = data.index(b'\xff\xc0')  # baseline frame header: length, precision, H, W
    data[sof + 5:sof + 9] = struct.pack('>HH', height, width)
    return bytes(data)


def png_claiming(height, width):
    """Return a tiny PNG whose IHDR claims height x width, with a valid checksum."""
    buf = io.BytesIO()
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(buf, 'PNG')
    data = bytearray(buf.getvalue())
    data[16:24] = struct.pack('>II', width, height)
    data[29:33] = struct.pack('>I', zlib.crc32(bytes(data[12:29])))
    return bytes(data)
