"""Read and write image files safely: one pixel limit, strict decoding, one-line errors.

Every image d2lfcn reads goes through `read_image`, `check_image` or
`read_label_png`. They read the file's bytes and decode those (OpenCV crashes
on file names that are not valid UTF-8), refuse images larger than
`max_pixels()` from the header before decoding, and treat anything a decoder
would paper over as an error: libjpeg's "Corrupt JPEG data" and "Premature end
of JPEG file" warnings, Pillow's truncated files. Nothing is printed; every
failure is one `UserError` naming the file.

Explained in chapters/semantic-segmentation-and-dataset.md.
"""
import contextlib
import io
import os
import warnings

import cv2
import numpy as np
import simplejpeg
from PIL import Image, ImageFile

from .utils import UserError, atomic_path

__all__ = ['MAX_PIXELS', 'max_pixels', 'read_image', 'check_image', 'read_label_png',
           'write_png']

# Predicting a whole image with D2L's FCN takes about 220 bytes per pixel
# (measured in predict's pad mode), so 4096 x 4096 pixels keeps one image near
# 3.5 GB: a 12-megapixel photo (4032 x 3024) passes, VOC's 500 x 500 has
# 67x headroom, and a 12 KB file claiming 60000 x 60000 pixels never reaches
# the decoder. Pillow's own bomb check starts at 89 million pixels.
MAX_PIXELS = 4096 * 4096

_JPEG_START = b'\xff\xd8\xff'
# Pillow's formats that decode in-process (EPS, for one, would start Ghostscript).
_PIL_FORMATS = ('PNG', 'BMP', 'GIF', 'TIFF', 'WEBP', 'PPM')
_FORMATS_TEXT = 'JPEG, PNG, BMP, GIF, TIFF, WebP or PPM'  # what the two decoders read
_EXIF_ORIENTATION = 0x0112


def max_pixels():
    """Return the largest width x height d2lfcn decodes: $D2LFCN_MAX_PIXELS, else MAX_PIXELS."""
    value = os.environ.get('D2LFCN_MAX_PIXELS', '').strip()
    if not value:
        return MAX_PIXELS
    try:
        limit = int(value)
    except ValueError:
        limit = 0
    if limit <= 0:
        raise UserError(f'$D2LFCN_MAX_PIXELS={value!r}: expected a positive whole number '
                        f'of pixels (default {MAX_PIXELS} = 4096x4096)')
    return limit


def _check_pixels(path, width, height, what):
    limit = max_pixels()
    if width * height > limit:
        raise UserError(f'{path}: {what} of {width}x{height} pixels is larger than the '
                        f'limit of {limit} pixels; refusing to decode it (set '
                        '$D2LFCN_MAX_PIXELS to a larger limit if the image is genuine)')


def _read_bytes(path, what):
    try:
        with open(path, 'rb') as f:
            return f.read()
    except FileNotFoundError:
        raise UserError(f'{path}: {what} is missing') from None
    except IsADirectoryError:
        raise UserError(f'{path}: {what} is a folder, not a file') from None
    except OSError as e:
        raise UserError(f'{path}: cannot read {what} ({e.strerror or e})') from None


def _jpeg_header(data, path, what):
    """Return (height, width) of JPEG bytes, checked against the pixel limit."""
    try:
        height, width, _, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError as e:
        raise UserError(f'{path}: unreadable {what} ({e})') from None
    _check_pixels(path, width, height, what)
    return height, width


def _decode_jpeg(data, path, what, **scale):
    """Decode JPEG bytes to (h, w, 3) uint8 RGB; libjpeg's warnings are errors."""
    try:
        # strict: what libjpeg only warns about (a gap in the data, a missing
        # end) raises instead of being patched with grey.
        return simplejpeg.decode_jpeg(data, colorspace='RGB', strict=True, **scale)
    except ValueError as e:
        kind = 'truncated' if 'Premature end' in str(e) else 'corrupt'
        raise UserError(f'{path}: {kind} {what} ({e}); replace the file') from None


@contextlib.contextmanager
def _strict_pillow():
    """Make Pillow raise on truncated data and print nothing, for the `with` body."""
    # Importing gluoncv sets ImageFile.LOAD_TRUNCATED_IMAGES = True for the whole
    # process, which would let truncated files through as grey.
    saved = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            # Bomb warnings (our limit is checked instead), palette transparency notes.
            warnings.simplefilter('ignore')
            yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = saved


def _open_pil(data, path, what):
    """Open non-JPEG bytes with Pillow (header only), checked against the pixel limit."""
    try:
        with _strict_pillow():
            im = Image.open(io.BytesIO(data), formats=_PIL_FORMATS)
    except Image.DecompressionBombError:
        # Pillow refuses at open, before we see the size; its limit may be ours' or lower.
        limit = min(max_pixels(), 2 * Image.MAX_IMAGE_PIXELS)
        raise UserError(f'{path}: {what} larger than {limit} pixels; refusing to decode '
                        'it (set $D2LFCN_MAX_PIXELS to a larger limit if the image is '
                        'genuine)') from None
    except Image.UnidentifiedImageError:
        raise UserError(f'{path}: unreadable {what} (not a {_FORMATS_TEXT} file)') from None
    except (OSError, SyntaxError, ValueError) as e:
        raise UserError(f'{path}: unreadable or truncated {what} ({e})') from None
    _check_pixels(path, im.width, im.height, what)
    return im


def _load_pil(im, path, what, mode=None):
    """Decode an opened Pillow image to an array, optionally converted to `mode`."""
    try:
        with _strict_pillow():
            im.load()
            return np.array(im.convert(mode) if mode and im.mode != mode else im)
    except (OSError, SyntaxError, ValueError) as e:
        raise UserError(f'{path}: unreadable or truncated {what} ({e})') from None


def _orient(rgb, orientation):
    """Apply an EXIF orientation (1..8) to an (H, W, 3) array, as photo viewers do."""
    ops = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
           5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, -1),
           7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1], 8: lambda a: np.rot90(a, 1)}
    op = ops.get(orientation)
    return np.ascontiguousarray(op(rgb)) if op else rgb


def _exif_orientation(im):
    try:
        return int(im.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # a damaged EXIF block only loses the rotation, as in viewers
        return 1


def _jpeg_orientation(data):
    try:
        with Image.open(io.BytesIO(data), formats=['JPEG']) as im:
            return _exif_orientation(im)
    except Exception:  # the pixels decoded; only the EXIF block is unreadable
        return 1


def read_image(path, exif_orientation=False, what='image'):
    """Return an image file as an (H, W, 3) uint8 RGB array, or raise `UserError`.

    JPEGs are decoded by libjpeg-turbo in strict mode, other formats
    (PNG, BMP, GIF, TIFF, WebP, PPM) by Pillow; the file's contents decide,
    not its name. `exif_orientation=True` turns the pixels upright as photo
    viewers (and OpenCV's imread) do; training reads the stored pixel grid,
    which is the one VOC's labels are drawn on.

    Explained in chapters/semantic-segmentation-and-dataset.md.
    """
    data = _read_bytes(path, what)
    if data.startswith(_JPEG_START):
        _jpeg_header(data, path, what)
        rgb = _decode_jpeg(data, path, what)
        return _orient(rgb, _jpeg_orientation(data)) if exif_orientation else rgb
    with _open_pil(data, path, what) as im:
        rgb = _load_pil(im, path, what, 'RGB')  # before getexif(), which loads leniently
        return _orient(rgb, _exif_orientation(im)) if exif_orientation else rgb


def check_image(path, what='image'):
    """Return (height, width) of an image file after decoding it once, or raise `UserError`.

    A JPEG is decoded at 1/8 scale: its compressed data is read in full, so
    corruption shows, at about half the cost of a full decode.
    """
    data = _read_bytes(path, what)
    if data.startswith(_JPEG_START):
        height, width = _jpeg_header(data, path, what)
        _decode_jpeg(data, path, what, min_height=1, min_width=1, min_factor=8)
        return height, width
    with _open_pil(data, path, what) as im:
        _load_pil(im, path, what)
        return im.height, im.width


def read_label_png(path, what='label PNG'):
    """Return a label image: (H, W) uint8 indices for palette or grey PNGs, else (H, W, 3) RGB.

    Raises `UserError` for other modes (e.g. 16-bit), naming the file.
    """
    data = _read_bytes(path, what)
    if data.startswith(_JPEG_START):
        raise UserError(f'{path}: {what} is a JPEG, whose lossy colours are not class '
                        'ids; save labels as PNG')
    with _open_pil(data, path, what) as im:
        if im.mode in ('P', 'L'):
            return _load_pil(im, path, what)
        if im.mode in ('RGB', 'RGBA'):
            return _load_pil(im, path, what, 'RGB')
        raise UserError(f'{path}: {what} mode {im.mode} is neither a palette of class '
                        'ids nor RGB colours')


def write_png(path, rgb):
    """Write an (H, W, 3) uint8 RGB array as a PNG, atomically, or raise `UserError`."""
    ok, png = cv2.imencode('.png', np.ascontiguousarray(rgb[..., ::-1]))  # OpenCV: BGR
    if not ok:
        raise UserError(f'cannot write {path}: OpenCV could not encode the image')
    try:
        with atomic_path(path) as tmp:
            with open(tmp, 'wb') as f:
                f.write(png.tobytes())
    except OSError as e:
        raise UserError(f'cannot write {path}: {e.strerror or e}') from None
