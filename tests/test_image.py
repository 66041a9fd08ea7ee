"""Tests for d2lfcn/image.py: decoding against OpenCV, the pixel limit, strictness, PNG writing."""
import os

import cv2
import numpy as np
import pytest
from PIL import Image, ImageFile

from d2lfcn import image
from d2lfcn.utils import UserError

from bombs import jpeg_claiming, png_claiming  # tests/bombs.py


def _photo(h=45, w=60, seed=0):
    """A smooth RGB image with texture: JPEG artefacts stay small but nonzero."""
    yy, xx = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(seed)
    rgb = np.stack([xx * 4, yy * 5, (xx + yy) * 2], axis=-1) + rng.integers(0, 40, (h, w, 3))
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _save(path, rgb, fmt, **kwargs):
    Image.fromarray(rgb).save(path, fmt, **kwargs)
    return str(path)


def _cv2_rgb(path, flags=cv2.IMREAD_COLOR):
    return cv2.imread(str(path), flags)[:, :, ::-1]


@pytest.mark.parametrize('fmt, kwargs', [
    ('JPEG', {}), ('JPEG', {'progressive': True}), ('JPEG', {'subsampling': 0}),
    ('PNG', {}), ('BMP', {}), ('TIFF', {}), ('WEBP', {'lossless': True}), ('PPM', {})])
def test_pixels_match_opencv(tmp_path, fmt, kwargs):
    path = _save(tmp_path / f'a.{fmt.lower()}', _photo(), fmt, **kwargs)
    rgb = image.read_image(path)
    assert rgb.dtype == np.uint8 and rgb.shape == (45, 60, 3)
    np.testing.assert_array_equal(rgb, _cv2_rgb(path))


@pytest.mark.parametrize('mode', ['L', 'CMYK'])
def test_grey_and_cmyk_jpegs_match_opencv(tmp_path, mode):
    path = str(tmp_path / 'a.jpg')
    Image.fromarray(_photo()).convert(mode).save(path, 'JPEG')
    np.testing.assert_array_equal(image.read_image(path), _cv2_rgb(path))


def test_contents_not_the_name_decide_the_decoder(tmp_path):
    path = _save(tmp_path / 'really-a-png.jpg', _photo(), 'PNG')
    np.testing.assert_array_equal(image.read_image(path), _photo())


@pytest.mark.parametrize('orientation', range(1, 9))
@pytest.mark.parametrize('fmt', ['JPEG', 'PNG'])
def test_exif_orientation_as_opencv_applies_it(tmp_path, orientation, fmt):
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = _save(tmp_path / f'a.{fmt.lower()}', _photo(30, 50), fmt, exif=exif)
    upright = image.read_image(path, exif_orientation=True)
    np.testing.assert_array_equal(upright, _cv2_rgb(path))  # imread turns it upright
    stored = image.read_image(path)
    np.testing.assert_array_equal(stored, _cv2_rgb(path, cv2.IMREAD_COLOR |
                                                   cv2.IMREAD_IGNORE_ORIENTATION))
    assert image.check_image(path) == (30, 50)  # the stored grid, as labels are drawn


def test_pixel_limit_default_and_variable(monkeypatch):
    monkeypatch.delenv('D2LFCN_MAX_PIXELS', raising=False)
    assert image.max_pixels() == image.MAX_PIXELS == 4096 * 4096
    assert image.MAX_PIXELS > 500 * 500
    monkeypatch.setenv('D2LFCN_MAX_PIXELS', '1_000_000')
    assert image.max_pixels() == 1_000_000
    for bad in ('0', '-5', 'many', '1e6'):
        monkeypatch.setenv('D2LFCN_MAX_PIXELS', bad)
        with pytest.raises(UserError, match='D2LFCN_MAX_PIXELS'):
            image.max_pixels()


@pytest.mark.parametrize('fmt', ['JPEG', 'PNG'])
def test_pixel_limit_is_exact(tmp_path, monkeypatch, fmt):
    path = _save(tmp_path / 'a.img', _photo(45, 60), fmt)
    monkeypatch.setenv('D2LFCN_MAX_PIXELS', str(45 * 60))
    assert image.read_image(path).shape == (45, 60, 3)
    assert image.check_image(path) == (45, 60)
    monkeypatch.setenv('D2LFCN_MAX_PIXELS', str(45 * 60 - 1))
    for read in (image.read_image, image.check_image):
        with pytest.raises(UserError) as info:
            read(path)
        assert str(info.value) == (
            f'{path}: image of 60x45 pixels is larger than the limit of {45 * 60 - 1} '
            'pixels; refusing to decode it (set $D2LFCN_MAX_PIXELS to a larger limit if '
            'the image is genuine)')


@pytest.mark.parametrize('data, fragment', [
    (jpeg_claiming(60000, 60000), 'of 60000x60000 pixels is larger than the limit'),
    (png_claiming(5000, 5000), 'of 5000x5000 pixels is larger than the limit'),
    # Above Pillow's own bomb limit, it refuses in Image.open: still our message.
    (png_claiming(20000, 20000), 'larger than 16777216 pixels; refusing'),
])
def test_bombs_are_refused_from_the_header(tmp_path, data, fragment):
    path = tmp_path / 'bomb'
    path.write_bytes(data)
    assert len(data) < 2000
    readers = [image.read_image, image.check_image]
    if data.startswith(b'\x89PNG'):
        readers.append(image.read_label_png)
    for read in readers:
        with pytest.raises(UserError, match=fragment):
            read(str(path))


def test_jpeg_label_is_refused(tmp_path):
    path = _save(tmp_path / 'label.jpg', _photo(), 'JPEG')
    with pytest.raises(UserError, match='label PNG is a JPEG'):
        image.read_label_png(path)


def _middle_cut_jpeg(path):
    _save(path, _photo(120, 160), 'JPEG')
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 3] + data[2 * len(data) // 3:])
    return str(path)


def test_corrupt_jpeg_data_is_an_error_though_opencv_decodes_it(tmp_path, capfd):
    path = _middle_cut_jpeg(tmp_path / 'cut.jpg')
    assert cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR) is not None
    assert 'Corrupt JPEG data' in capfd.readouterr().err  # libjpeg only warned
    for read in (image.read_image, image.check_image):
        with pytest.raises(UserError) as info:
            read(path)
        assert str(info.value) == (f'{path}: corrupt image (Corrupt JPEG data: premature '
                                   'end of data segment); replace the file')
    assert capfd.readouterr().err == ''  # and nothing is printed


@pytest.mark.parametrize('fmt, fragment', [('JPEG', 'truncated image (Premature end'),
                                           ('PNG', 'unreadable or truncated image')])
@pytest.mark.parametrize('pillow_lenient', [False, True])
def test_truncated_files_are_errors(tmp_path, monkeypatch, fmt, fragment, pillow_lenient):
    # `import gluoncv` sets this for the whole process; it must not matter.
    monkeypatch.setattr(ImageFile, 'LOAD_TRUNCATED_IMAGES', pillow_lenient)
    path = tmp_path / 'a'
    _save(path, _photo(120, 160), fmt)  # large enough that half cuts the pixel data
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    for read in (image.read_image, image.check_image,
                 lambda p: image.read_image(p, exif_orientation=True)):
        with pytest.raises(UserError, match=fragment.replace('(', r'\(')):
            read(str(path))


def test_missing_folder_and_garbage_are_one_line(tmp_path):
    cases = [(tmp_path / 'none.jpg', 'image is missing'),
             (tmp_path, 'image is a folder, not a file'),
             (tmp_path / 'junk', 'unreadable image (not a JPEG, PNG')]
    (tmp_path / 'junk').write_bytes(b'%!PS-Adobe-3.0 EPSF-3.0\n')  # never Ghostscript
    for path, fragment in cases:
        with pytest.raises(UserError) as info:
            image.read_image(str(path))
        assert '\n' not in str(info.value) and fragment in str(info.value)


def test_label_png_modes(tmp_path):
    ids = np.arange(12, dtype=np.uint8).reshape(3, 4)
    pal = Image.fromarray(ids)
    pal.putpalette(list(range(256)) * 3)
    pal.save(tmp_path / 'p.png')
    np.testing.assert_array_equal(image.read_label_png(str(tmp_path / 'p.png')), ids)
    rgba = np.dstack([_photo(3, 4), np.full((3, 4), 7, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / 'rgba.png')
    np.testing.assert_array_equal(image.read_label_png(str(tmp_path / 'rgba.png')),
                                  _photo(3, 4))
    Image.fromarray(ids.astype(np.uint16) * 300).save(tmp_path / 'i16.png')
    with pytest.raises(UserError, match='mode I;16 is neither a palette'):
        image.read_label_png(str(tmp_path / 'i16.png'))


def test_write_png_is_lossless_and_handles_any_file_name(tmp_path):
    folder = tmp_path / os.fsdecode(b'out\xfe')
    path = str(folder / os.fsdecode(b'bad\xffname.png'))  # cv2.imwrite crashed on these
    image.write_png(path, _photo())
    np.testing.assert_array_equal(np.array(Image.open(path)), _photo())
    assert os.listdir(folder) == [os.path.basename(path)]  # no temp file left
    np.testing.assert_array_equal(image.read_image(path), _photo())


def test_write_png_failure_is_one_line_and_leaves_nothing(tmp_path):
    (tmp_path / 'file').write_text('a file where a folder should be')
    with pytest.raises(UserError) as info:
        image.write_png(str(tmp_path / 'file' / 'a.png'), _photo())
    assert str(info.value).startswith(f'cannot write {tmp_path / "file" / "a.png"}: ')
    assert sorted(os.listdir(tmp_path)) == ['file']
