"""Every fault a user can cause ends in one line: the table of faults (issue 13).

Each row builds one bad input in its tmp_path and runs a real command
(`python -m d2lfcn.train ...`, `python -m d2lfcn.predict ...`) or a library
call, then checks what a user would see:

- exit code 2 (not 1, not a signal),
- exactly one non-empty line on stderr, `error: ` and the row's fragment,
  with no traceback and no OpenCV/libjpeg warning next to it,
- no file or folder in tmp_path that was not there before, except what the
  row keeps on purpose (a download's resumable `.part`).

A row is `Fault(id, make, fragment, keeps=(), code=2, out='', fresh=False)`: `make(t)` builds the fault
with the helpers of `_Maker` and returns the argv: a module name and its
flags, or a function and its arguments (run inside `run_cli`, as a command
would). To add a fault, add a row.

Each row runs in a forked child of this process (tests/forkrun.py), as
`python -m` would run it, without paying for the imports every time.
"""
import ctypes
import dataclasses
import io
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
import time

import numpy as np
import pytest
from PIL import Image

from d2lfcn import download as dl
from d2lfcn import voc

from bombs import jpeg_claiming, png_claiming  # tests/bombs.py
from forkrun import run_forked  # tests/forkrun.py


# --------------------------------------------------------------- the runner

def _drop_dac_override():
    """Make this process obey file permission bits even as root (no CAP_DAC_*)."""
    if os.geteuid() != 0:
        return

    class Header(ctypes.Structure):
        _fields_ = [('version', ctypes.c_uint32), ('pid', ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [('effective', ctypes.c_uint32), ('permitted', ctypes.c_uint32),
                    ('inheritable', ctypes.c_uint32)]
    libc = ctypes.CDLL(None, use_errno=True)
    header, data = Header(0x20080522, 0), (Data * 2)()  # _LINUX_CAPABILITY_VERSION_3
    keep = ~((1 << 1) | (1 << 2)) & 0xffffffff  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
    if libc.capget(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), 'capget')
    for field in ('effective', 'permitted', 'inheritable'):
        setattr(data[0], field, getattr(data[0], field) & keep)
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), 'capset')


def _tree(root):
    """Return every path under `root`, relative, folders with a trailing '/'."""
    found = set()
    for folder, dirs, files in os.walk(root):
        rel = os.path.relpath(folder, root)
        for d in dirs:
            found.add(os.path.normpath(os.path.join(rel, d)) + '/')
        for f in files:
            found.add(os.path.normpath(os.path.join(rel, f)))
    return found


# --------------------------------------------------------- fault builders

def _rng_image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _jpeg_bytes(rgb, quality=90):
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, 'JPEG', quality=quality)
    return buf.getvalue()


def _png_bytes(rgb):
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, 'PNG')
    return buf.getvalue()


def jpeg_middle_cut(data):
    """Cut out the middle third of a JPEG, keeping its end marker: libjpeg only warns."""
    n = len(data)
    return data[:n // 3] + data[2 * n // 3:]


class _Maker:
    """What a row's `make` gets: tmp_path and builders for commands and bad files."""

    def __init__(self, tmp_path, small_voc_dir, params, server):
        self.tmp = tmp_path
        self._small_voc = small_voc_dir
        self.params = params
        self._server = server
        self.env = {}         # environment of the command
        self.in_child = []    # run in the child before the command
        self.cleanup = []     # run after the check
        self.out = str(tmp_path / 'out')

    # -- data
    def voc(self):
        """Return a writable copy of the tiny VOC tree (12 train + 8 val images)."""
        dst = self.tmp / 'VOCdevkit' / 'VOC2012'
        if not dst.exists():
            shutil.copytree(self._small_voc, dst)
        return str(dst)

    def names(self, split='train'):
        path = os.path.join(self.voc(), 'ImageSets', 'Segmentation', split + '.txt')
        with open(path) as f:
            return f.read().split()

    def jpg(self, name=None, split='train'):
        return os.path.join(self.voc(), 'JPEGImages', (name or self.names(split)[0]) + '.jpg')

    def png(self, name=None, split='train'):
        return os.path.join(self.voc(), 'SegmentationClass',
                            (name or self.names(split)[0]) + '.png')

    def split_file(self, split='train'):
        return os.path.join(self.voc(), 'ImageSets', 'Segmentation', split + '.txt')

    def write(self, path, data):
        with open(path, 'wb') as f:
            f.write(data)
        return path

    def photo(self, name='photo.jpg', h=50, w=70):
        return self.write(str(self.tmp / name), _jpeg_bytes(_rng_image(h, w)))

    def unreadable(self, path):
        """Take away all permissions of `path`, and root's power to ignore them."""
        os.chmod(path, 0)
        self.in_child.append(_drop_dac_override)
        self.cleanup.append(lambda: os.chmod(path, 0o755))
        return path

    # -- commands
    def train(self, *flags, data=None):
        return ['d2lfcn.train', '--demo', '--data-dir', data or self.voc(),
                '--crop-size', '64', '64', '--num-epochs', '1', '--batch-size', '2',
                '--num-workers', '0', '--out-dir', self.out] + list(flags)

    def predict(self, *images_and_flags):
        return ['d2lfcn.predict', *images_and_flags, '--params', self.params,
                '--num-classes', '3', '--out-dir', self.out]

    def download(self, url_path='/mirror/', data_dir=None):
        """Return train's argv that downloads VOC2012 from the test's server."""
        self.env['D2LFCN_DATA'] = data_dir or str(self.tmp / 'data')
        os.makedirs(self.env['D2LFCN_DATA'], exist_ok=True)  # the data home may stay
        self.env['D2LFCN_VOC_URL'] = self.server.url + url_path
        return ['d2lfcn.train', '--no-pretrained-base', '--out-dir', self.out]

    @property
    def server(self):
        return self._server()

    # -- archives
    def tar(self, *members):
        """Write a tar of (name, bytes) files and (name, '->' or '=>', target) links."""
        path = str(self.tmp / 'voc.tar')
        with tarfile.open(path, 'w') as tar:
            for name, *rest in members:
                info = tarfile.TarInfo(name)
                if len(rest) == 2:
                    info.type = tarfile.SYMTYPE if rest[0] == '->' else tarfile.LNKTYPE
                    info.linkname, info.mode = rest[1], 0o777
                    tar.addfile(info)
                else:
                    info.size = len(rest[0])
                    tar.addfile(info, io.BytesIO(rest[0]))
        return path

    def extract(self, tar, without_data_filter=False):
        if without_data_filter:  # as on Pythons before 3.8.17 / 3.11.4
            self.in_child.append(lambda: delattr(tarfile, 'data_filter'))
        return [dl.safe_extract, tar, str(self.tmp / 'data' / 'VOCdevkit' / 'VOC2012'),
                'VOCdevkit/VOC2012']


@dataclasses.dataclass
class Fault:
    id: str
    make: object          # make(t: _Maker) -> argv
    fragment: str         # the error line must contain this
    keeps: tuple = ()     # paths (relative to tmp_path) the fault may leave, on purpose
    code: int = 2         # 0 for a case that is not an error but must say so (`out`)
    out: str = ''         # stdout must contain this
    fresh: bool = False   # run in a new `python -m` process (for what is read at import)


# ------------------------------------------------------ faults: VOC data

def _label_with(t, edit, mode=None):
    png = t.png()
    ids = np.array(Image.open(png))
    out = edit(ids)
    if isinstance(out, Image.Image):
        out.save(png)
    else:
        im = Image.fromarray(out)
        im.putpalette(voc.voc_palette().ravel().tolist())
        im.save(png)
    return png


def _set77(ids):
    ids[0, 0] = 77
    return ids


def _unknown_colour(ids):
    rgb = voc.voc_palette()[ids]
    rgb[1, 2] = (1, 2, 3)
    return Image.fromarray(rgb)


def _sixteen_bit(ids):
    return Image.fromarray(ids.astype(np.uint16) * 300)


def _wrong_size(ids):
    return np.pad(ids, ((0, 0), (0, 3)))


def _truncate(path, keep=0.5):
    with open(path, 'rb') as f:
        data = f.read()
    with open(path, 'wb') as f:
        f.write(data[:int(len(data) * keep)])
    return path


def _cut_middle(path):
    with open(path, 'rb') as f:
        data = f.read()
    with open(path, 'wb') as f:
        f.write(jpeg_middle_cut(data))
    return path


def _list(t, *names, split='train'):
    with open(t.split_file(split), 'w') as f:
        f.write('\n'.join(names) + '\n')


def _outside_name(t):
    """List an existing image pair outside the VOC folder as ../../.."""
    outside = t.tmp / 'elsewhere'
    outside.mkdir()
    shutil.copy(t.jpg(), outside / 'x.jpg')
    shutil.copy(t.png(), outside / 'x.png')
    _list(t, '../../../elsewhere/x')  # from JPEGImages/ up to tmp_path
    return t.train()


def _absolute_name(t):
    outside = t.tmp / 'elsewhere'
    outside.mkdir()
    shutil.copy(t.jpg(), outside / 'x.jpg')
    shutil.copy(t.png(), outside / 'x.png')
    _list(t, str(outside / 'x'))
    return t.train()


def _non_utf8_folder(t):
    """A VOC tree under a folder whose name is not UTF-8, with one corrupt JPEG."""
    src = t.voc()
    name = os.fsdecode(b'data-\xff')
    dst = str(t.tmp / name / 'VOC2012')
    shutil.move(src, dst)
    shutil.rmtree(t.tmp / 'VOCdevkit')
    with open(os.path.join(dst, 'ImageSets', 'Segmentation', 'train.txt')) as f:
        first = f.read().split()[0]
    _cut_middle(os.path.join(dst, 'JPEGImages', first + '.jpg'))
    return t.train(data=dst)


VOC_FAULTS = [
    Fault('train-jpeg-claims-60000x60000',
          lambda t: (t.write(t.jpg(), jpeg_claiming(60000, 60000)), t.train())[1],
          'image of 60000x60000 pixels is larger than the limit of 16777216 pixels'),
    Fault('train-label-claims-20000x20000',
          lambda t: (t.write(t.png(), png_claiming(20000, 20000)), t.train())[1],
          'label PNG larger than 16777216 pixels; refusing to decode it'),
    Fault('train-label-claims-5000x5000',
          lambda t: (t.write(t.png(), png_claiming(5000, 5000)), t.train())[1],
          'label PNG of 5000x5000 pixels is larger than the limit'),
    Fault('train-jpeg-middle-cut-out', lambda t: (_cut_middle(t.jpg()), t.train())[1],
          'corrupt image (Corrupt JPEG data'),
    Fault('val-jpeg-middle-cut-out',
          lambda t: (_cut_middle(t.jpg(split='val')), t.train())[1],
          'corrupt image (Corrupt JPEG data'),
    Fault('train-jpeg-truncated', lambda t: (_truncate(t.jpg()), t.train())[1],
          'truncated image (Premature end of JPEG file)'),
    Fault('train-jpeg-garbage',
          lambda t: (t.write(t.jpg(), b'not a jpeg' * 20), t.train())[1],
          'unreadable image (not a JPEG, PNG'),
    Fault('train-jpeg-empty', lambda t: (t.write(t.jpg(), b''), t.train())[1],
          'unreadable image'),
    Fault('train-jpeg-missing', lambda t: (os.remove(t.jpg()), t.train())[1],
          'image listed in'),
    Fault('train-jpeg-unreadable', lambda t: (t.unreadable(t.jpg()), t.train())[1],
          'cannot read image (Permission denied)'),
    Fault('train-label-wrong-size', lambda t: (_label_with(t, _wrong_size), t.train())[1],
          'but its image'),
    Fault('train-label-value-77', lambda t: (_label_with(t, _set77), t.train())[1],
          'label value 77 is neither a class id'),
    Fault('train-label-unknown-colour',
          lambda t: (_label_with(t, _unknown_colour), t.train())[1],
          'colour (1, 2, 3) at (1, 2) is not a VOC class colour'),
    Fault('train-label-16-bit', lambda t: (_label_with(t, _sixteen_bit), t.train())[1],
          'is neither a palette of class ids nor RGB colours'),
    Fault('train-label-truncated', lambda t: (_truncate(t.png()), t.train())[1],
          'unreadable or truncated label PNG'),
    Fault('train-label-missing', lambda t: (os.remove(t.png()), t.train())[1],
          'label PNG for'),
    Fault('train-split-empty', lambda t: (_list(t, ''), t.train())[1],
          'split file lists no images'),
    Fault('train-split-val-missing', lambda t: (os.remove(t.split_file('val')), t.train())[1],
          'val.txt: cannot read split file (No such file or directory)'),
    Fault('train-split-not-utf8',
          lambda t: (t.write(t.split_file(), b'2007_000032\n\xff\xfe\n'), t.train())[1],
          'train.txt: not UTF-8 text (byte 0xff at offset 12)'),
    Fault('train-split-name-climbs-out', _outside_name,
          "image name '../../../elsewhere/x' leads outside JPEGImages"),
    Fault('train-split-name-absolute', _absolute_name, 'leads outside JPEGImages'),
    Fault('train-data-dir-missing', lambda t: t.train(data=str(t.tmp / 'nowhere')),
          'nowhere: no such folder'),
    Fault('train-data-dir-not-voc', lambda t: (os.mkdir(t.tmp / 'empty'),
                                               t.train(data=str(t.tmp / 'empty')))[1],
          'no VOC2012 data here'),
    Fault('train-data-dir-unreadable', lambda t: t.train(data=t.unreadable(t.voc())),
          'permission denied looking for VOC2012 data'),
    Fault('train-data-dir-not-utf8-corrupt-jpeg', _non_utf8_folder,
          'corrupt image (Corrupt JPEG data'),
    Fault('train-every-image-smaller-than-crop',
          lambda t: t.train('--crop-size', '512', '512'),
          'every image is smaller than the crop 512x512'),
    Fault('train-max-pixels-not-a-number',
          lambda t: (t.env.update(D2LFCN_MAX_PIXELS='lots'), t.train())[1],
          "$D2LFCN_MAX_PIXELS='lots': expected a positive whole number"),
    Fault('train-max-pixels-lowered',
          lambda t: (t.env.update(D2LFCN_MAX_PIXELS='1000'), t.train())[1],
          'is larger than the limit of 1000 pixels'),
    Fault('train-crop-not-multiple-of-32', lambda t: t.train('--crop-size', '33', '33'),
          '--crop-size 33 33: height and width must be positive multiples of 32'),
    Fault('train-zero-epochs', lambda t: t.train('--num-epochs', '0'),
          '--num-epochs 0: out of range'),
    Fault('train-batch-larger-than-data', lambda t: t.train('--batch-size', '1000'),
          '--batch-size 1000: more than the'),
    Fault('train-unknown-flag', lambda t: t.train('--nope'),
          'unrecognized arguments: --nope'),
    Fault('train-unknown-arch', lambda t: t.train('--arch', 'fcn4s'),
          "invalid choice: 'fcn4s'"),
]


# ------------------------------------------------------- faults: predict

def _non_utf8_corrupt(t):
    path = str(t.tmp / os.fsdecode(b'bad\xffname.jpg'))
    t.write(path, jpeg_middle_cut(_jpeg_bytes(_rng_image(80, 90))))
    return t.predict(path)


PREDICT_FAULTS = [
    Fault('predict-image-missing', lambda t: t.predict(str(t.tmp / 'none.jpg')),
          'none.jpg does not exist'),
    Fault('predict-image-is-folder', lambda t: t.predict(str(t.tmp)), 'is not a file'),
    Fault('predict-image-garbage',
          lambda t: t.predict(t.write(str(t.tmp / 'a.jpg'), b'%PDF-1.4 not an image')),
          'unreadable image (not a JPEG, PNG, BMP, GIF, TIFF, WebP or PPM file)'),
    Fault('predict-image-eps',  # Pillow would start Ghostscript for it
          lambda t: t.predict(t.write(str(t.tmp / 'a.eps'),
                                      b'%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n')),
          'unreadable image (not a JPEG'),
    Fault('predict-image-empty', lambda t: t.predict(t.write(str(t.tmp / 'a.png'), b'')),
          'unreadable image'),
    Fault('predict-jpeg-claims-60000x60000',
          lambda t: t.predict(t.write(str(t.tmp / 'a.jpg'), jpeg_claiming(60000, 60000))),
          'image of 60000x60000 pixels is larger than the limit'),
    Fault('predict-jpeg-claims-30000x30000',  # decoded 34 s, then MemoryError
          lambda t: t.predict(t.write(str(t.tmp / 'a.jpg'), jpeg_claiming(30000, 30000))),
          'image of 30000x30000 pixels is larger than the limit'),
    Fault('predict-png-claims-20000x20000',  # Pillow's DecompressionBombError
          lambda t: t.predict(t.write(str(t.tmp / 'a.png'), png_claiming(20000, 20000))),
          'image larger than 16777216 pixels; refusing to decode it'),
    Fault('predict-png-claims-5000x5000',
          lambda t: t.predict(t.write(str(t.tmp / 'a.png'), png_claiming(5000, 5000))),
          'image of 5000x5000 pixels is larger than the limit'),
    Fault('predict-jpeg-middle-cut-out',
          lambda t: t.predict(_cut_middle(t.photo(h=80, w=90))),
          'corrupt image (Corrupt JPEG data: premature end of data segment)'),
    Fault('predict-jpeg-truncated', lambda t: t.predict(_truncate(t.photo())),
          'truncated image (Premature end of JPEG file)'),
    Fault('predict-png-truncated',
          lambda t: t.predict(_truncate(t.write(str(t.tmp / 'a.png'),
                                                _png_bytes(_rng_image(40, 40))))),
          'unreadable or truncated image'),
    Fault('predict-image-unreadable', lambda t: t.predict(t.unreadable(t.photo())),
          'cannot read image (Permission denied)'),
    Fault('predict-non-utf8-name-corrupt', _non_utf8_corrupt, 'corrupt image'),
    Fault('predict-two-images-one-stem',
          lambda t: t.predict(t.photo('a.jpg'), t.photo('b.jpg'),
                              t.write(str(t.tmp / 'a.png'), _png_bytes(_rng_image(9, 9)))),
          'would both write a_label.png'),
    Fault('predict-out-dir-is-a-file',
          lambda t: t.predict(t.photo()) + ['--out-dir', t.write(str(t.tmp / 'f'), b'x')],
          'is a file, not a folder'),
    Fault('predict-overlap-1', lambda t: t.predict(t.photo(), '--overlap', '1'),
          '--overlap must lie in [0, 1)'),
    Fault('predict-tile-not-multiple-of-32',
          lambda t: t.predict(t.photo(), '--mode', 'tile', '--tile-size', '33', '33'),
          '--tile-size must be positive multiples of 32'),
    Fault('predict-params-missing',
          lambda t: t.predict(t.photo())[:2] + ['--params', str(t.tmp / 'none.params')],
          'does not exist'),
]


# ------------------------------------------------------ faults: download

def _voc_tar_bytes():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode='w') as tar:
        for name in ('VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt',
                     'VOCdevkit/VOC2012/JPEGImages/a.jpg'):
            data = os.urandom(100_000)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _serve(t, **behaviour):
    srv = t.server
    srv.files['/mirror/' + voc.VOC_TAR] = _voc_tar_bytes()
    for name, value in behaviour.items():
        setattr(srv, name, value)
    return srv


def _closed_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _another_download_running(t):
    """Start a real download into the same file, held half-way by the server."""
    srv = _serve(t, gate=threading.Event())
    argv = t.download()
    path = os.path.join(t.env['D2LFCN_DATA'], voc.VOC_TAR)
    thread = threading.Thread(target=lambda: dl.download(srv.url + '/mirror/' + voc.VOC_TAR,
                                                         path), daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.requests:  # the first download holds the lock
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.01)
    t.cleanup += [srv.gate.set, lambda: thread.join(30)]
    return argv


def _disk_full(t):
    """Put $D2LFCN_DATA on a 64 KiB tmpfs (root only), then download 200 KB into it."""
    small = _small_disk(t, 'data')
    _serve(t)
    return t.download(data_dir=small)


def _read_only_data_dir(t):
    data = t.tmp / 'data'
    data.mkdir()
    data.chmod(0o555)
    t.in_child.append(_drop_dac_override)
    t.cleanup.append(lambda: data.chmod(0o755))
    _serve(t)
    return t.download()


PART = os.path.join('data', voc.VOC_TAR + '.part')

DOWNLOAD_FAULTS = [
    Fault('download-content-length-abc',
          lambda t: (_serve(t, length='abc'), t.download())[1],
          "the server sent Content-Length 'abc', not a number of bytes"),
    Fault('download-redirect-loop', lambda t: t.download('/loop/'),
          'redirect error that would lead to an infinite loop'),
    Fault('download-not-found', lambda t: t.download('/nothing/'), 'Not Found'),
    Fault('download-unreachable', lambda t: (t.download(), t.env.update(
        D2LFCN_VOC_URL=f'http://127.0.0.1:{_closed_port()}/'))[0],
        'check the network, or pass --data-dir'),
    Fault('download-wrong-sha1', lambda t: (_serve(t), t.download())[1],
          f'but its sha1 is not {voc.VOC_SHA1}; deleted it'),
    Fault('download-connection-cut-every-time',  # the .part is kept to resume
          lambda t: (_serve(t, cuts=100), t.download())[1],
          'connection closed after', keeps=(PART,)),
    Fault('download-second-at-once', _another_download_running,
          'another download into this file is running'),
    Fault('download-disk-full', _disk_full, '.part: disk full after', keeps=(PART,)),
    Fault('download-data-dir-read-only', _read_only_data_dir,
          'cannot write the download (Permission denied)'),
]


# ------------------------------------------------------- faults: archives

_HARDLINK_VIA_SYMLINK = (  # as text inside; on disk, e turns the '..' into tmp_path
    ('VOCdevkit/VOC2012/a/b/c/e', '->', '../..'),
    ('VOCdevkit/VOC2012/evil', '=>', 'VOCdevkit/VOC2012/a/b/c/e/../../../../../../victim'))


def _victim(t):
    t.write(str(t.tmp / 'victim'), b'keep me')


ARCHIVE_FAULTS = [
    Fault('extract-not-a-tar',
          lambda t: t.extract(t.write(str(t.tmp / 'voc.tar'), b'<html>oops</html>\n' * 50)),
          'voc.tar: not a tar archive'),
    Fault('extract-tar-cut-in-half',
          lambda t: t.extract(_truncate(t.tar(('VOCdevkit/VOC2012/a', os.urandom(9000))),
                                        keep=0.3)),  # into the member's data
          'cannot extract (unexpected end of data)'),
    Fault('extract-no-voc-folder', lambda t: t.extract(t.tar(('other/a', b'x'))),
          "has no folder 'VOCdevkit/VOC2012'"),
    Fault('extract-absolute-member',
          lambda t: t.extract(t.tar((str(t.tmp / 'evil'), b'x'))), 'absolute path'),
    Fault('extract-dotdot-member',
          lambda t: t.extract(t.tar(('VOCdevkit/VOC2012/../../../evil', b'x'))),
          "'..' in path"),
    Fault('extract-hardlink-through-symlink',
          lambda t: (_victim(t), t.extract(t.tar(*_HARDLINK_VIA_SYMLINK)))[1],
          'hard link to'),
    Fault('extract-hardlink-through-symlink-without-data-filter',
          lambda t: (_victim(t), t.extract(t.tar(*_HARDLINK_VIA_SYMLINK),
                                           without_data_filter=True))[1],
          'hard link to'),
    Fault('extract-symlink-leaves-after-move',
          lambda t: t.extract(t.tar(('VOCdevkit/VOC2012/ok', b'x'),
                                    ('VOCdevkit/VOC2012/up', '->', '../..'))),
          "symlink to '../..' outside the target folder"),
    Fault('extract-symlinked-voc-folder',
          lambda t: t.extract(t.tar(('VOCdevkit/real/ok', b'x'),
                                    ('VOCdevkit/VOC2012', '->', '..'))),
          'the folder to extract is a symlink'),
]

# ------------------------------------ faults: run folders, export, figures

def _small_disk(t, name, size='64k'):
    """Mount a small tmpfs at tmp_path/name (root only) and return its path."""
    small = t.tmp / name
    small.mkdir()
    try:
        mounted = subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs',
                                  str(small)], capture_output=True)
    except FileNotFoundError:
        pytest.skip('no mount command here')
    if mounted.returncode:
        pytest.skip('cannot mount a small tmpfs here (needs root): '
                    + mounted.stderr.decode().strip())
    t.cleanup.append(lambda: subprocess.run(['umount', str(small)], check=True))
    return str(small)


def _read_only(t, name):
    """Return a folder (created now) that the command may not write into."""
    folder = t.tmp / name
    folder.mkdir()
    folder.chmod(0o555)
    t.in_child.append(_drop_dac_override)
    t.cleanup.append(lambda: folder.chmod(0o755))
    return str(folder)


def _locked_out_dir(t):
    """Hold the out dir's lock in this (parent) process while the row runs."""
    from d2lfcn.runfolder import RunFolder
    holder = RunFolder(t.out)
    holder.lock()
    t.cleanup.append(holder.unlock)
    return t.train()


def _state(t, damage):
    """A run folder whose state.json is valid JSON but damaged; resume it."""
    os.makedirs(t.out)
    row = dict(epoch=1, loss=1.0, train_acc=0.5, test_acc=0.5, test_miou=0.1)
    state = dict(epoch=1, history=[row], best_miou=0.1, best_epoch=1,
                 files={'last.params': 'ab', 'last.states': 'cd'})
    damage(state)
    with open(os.path.join(t.out, 'state.json'), 'w') as f:
        f.write(__import__('json').dumps(state))
    return t.train('--resume', '--num-epochs', '2')


def _non_utf8(t, name):
    return str(t.tmp / os.fsdecode(b'run-\xff' + name.encode()))


def _export(t, *flags):
    return ['d2lfcn.export', '--params', t.params, '--out-dir', t.out, *flags]


def _notebooks(t):
    chapter = t.write(str(t.tmp / 'c.md'), b'# A chapter\n\n```python\nprint(1)\n```\n')
    return ['d2lfcn.notebooks', chapter, '--out-dir', t.out]


def _figures(t, *flags):
    return ['d2lfcn.figures', '--only', 'voc-legend', '--out-dir', t.out, *flags]


RUN_FAULTS = [
    Fault('train-seed-negative', lambda t: t.train('--seed', '-1'),
          '--seed -1: out of range'),
    Fault('train-out-dir-is-a-file',
          lambda t: t.train() + ['--out-dir', t.write(str(t.tmp / 'f'), b'x')],
          'is a file, not a folder'),
    Fault('train-out-dir-read-only', lambda t: t.train() + ['--out-dir', _read_only(t, 'ro')],
          'ro: cannot write there (Permission denied)'),
    Fault('train-out-dir-in-read-only-folder',
          lambda t: t.train() + ['--out-dir', os.path.join(_read_only(t, 'ro'), 'run')],
          'run: cannot write there (Permission denied)'),
    Fault('train-out-dir-not-utf8', lambda t: t.train() + ['--out-dir', _non_utf8(t, 'out')],
          'MXNet reads and writes only paths that are valid UTF-8'),
    Fault('train-out-dir-in-use', _locked_out_dir, f'(PID {os.getpid()}) is using it'),
    Fault('train-disk-full-at-checkpoint',
          lambda t: t.train() + ['--out-dir', os.path.join(_small_disk(t, 'disk'), 'run')],
          'cannot save epoch 1 into'),
    Fault('train-data-dir-parent-unsearchable',
          lambda t: (t.voc(), t.train(data=os.path.join(
              t.unreadable(str(t.tmp / 'VOCdevkit')), 'VOC2012')))[1],
          'cannot look there (Permission denied)'),
    Fault('resume-state-no-history', lambda t: _state(t, lambda s: s.pop('history')),
          'is damaged (history does not hold 1 epochs)'),
    Fault('resume-state-negative-epoch', lambda t: _state(t, lambda s: s.update(epoch=-2)),
          'is damaged (epoch -2 is not a positive integer)'),
    Fault('resume-state-string-epoch', lambda t: _state(t, lambda s: s.update(epoch='1')),
          "is damaged (epoch '1' is not a positive integer)"),
    Fault('resume-state-row-without-loss',
          lambda t: _state(t, lambda s: s['history'][0].pop('loss')),
          'is damaged (history row 1 lacks numbers)'),
    Fault('resume-state-not-an-object', lambda t: _state(t, lambda s: s.clear()),
          'is damaged ('),
    Fault('resume-state-not-json',
          lambda t: (_state(t, lambda s: None),
                     t.write(os.path.join(t.out, 'state.json'), b'{"epoch": '))[0],
          'is damaged ('),
    Fault('resume-nothing-to-resume', lambda t: t.train('--resume'),
          'state.json does not exist; train without --resume first'),
    Fault('predict-alpha-nan', lambda t: t.predict(t.photo(), '--alpha', 'nan'),
          '--alpha nan: must lie in [0, 1]'),
    Fault('predict-alpha-5', lambda t: t.predict(t.photo(), '--alpha', '5'),
          '--alpha 5.0: must lie in [0, 1]'),
    Fault('predict-params-is-a-folder',
          lambda t: t.predict(t.photo())[:2] + ['--params', str(t.tmp)], 'is a folder'),
    Fault('predict-params-not-utf8',
          lambda t: t.predict(t.photo())[:2] + ['--params', _non_utf8(t, 'p.params')],
          'MXNet reads and writes only paths that are valid UTF-8'),
    Fault('predict-gpus-negative', lambda t: t.predict(t.photo(), '--gpus', '-1'),
          '--gpus -1: MXNet sees 0 GPU(s)'),
    Fault('predict-out-dir-read-only',
          lambda t: t.predict(t.photo()) + ['--out-dir', _read_only(t, 'ro')],
          'cannot write there (Permission denied)'),
    Fault('export-params-not-utf8',
          lambda t: _export(t)[:1] + ['--params', _non_utf8(t, 'p.params'), '--out-dir', t.out],
          'MXNet reads and writes only paths that are valid UTF-8'),
    Fault('export-out-dir-read-only', lambda t: _export(t) + ['--out-dir', _read_only(t, 'ro')],
          'cannot write there (Permission denied)'),
    Fault('export-disk-full',
          lambda t: _export(t) + ['--out-dir', os.path.join(_small_disk(t, 'disk'), 'deploy')],
          'the disk is full or the write failed'),
    Fault('figures-out-dir-is-a-file',
          lambda t: _figures(t) + ['--out-dir', t.write(str(t.tmp / 'f'), b'x')],
          'is a file, not a folder'),
    Fault('figures-out-dir-read-only', lambda t: _figures(t) + ['--out-dir', _read_only(t, 'ro')],
          'cannot write there (Permission denied)'),
    Fault('figures-dpi-zero', lambda t: _figures(t, '--dpi', '0'),
          '--dpi 0: must be a positive number'),
    Fault('notebooks-out-dir-is-a-file',
          lambda t: _notebooks(t) + ['--out-dir', t.write(str(t.tmp / 'f'), b'x')],
          'is a file, not a folder'),
    Fault('notebooks-out-dir-read-only',
          lambda t: _notebooks(t) + ['--out-dir', _read_only(t, 'ro')],
          'cannot write there (Permission denied)'),
    Fault('notebooks-chapter-not-utf8',
          lambda t: ['d2lfcn.notebooks', t.write(str(t.tmp / 'c.md'), b'# Caf\xe9\n'),
                     '--out-dir', t.out],
          'c.md: not UTF-8 text (byte 0xe9 at offset 5)'),
    Fault('notebooks-chapter-missing',
          lambda t: ['d2lfcn.notebooks', str(t.tmp / 'none.md'), '--out-dir', t.out],
          'none.md: cannot read chapter (No such file or directory)'),
    Fault('figures-disk-full',
          lambda t: _figures(t) + ['--out-dir', os.path.join(_small_disk(t, 'disk', '16k'), 'img')],
          'cannot write'),
]



# --------------------------------------- faults: ONNX export and prediction

def _onnx(t):
    """Export the fixture's weights to ONNX once per row; return the .onnx file."""
    from d2lfcn.deploy import export_fcn
    from d2lfcn.model import load_fcn
    net = load_fcn(t.params)
    names = ['background', 'a', 'b']
    return export_fcn(net, str(t.tmp / 'model'), 'fcn', 64, 64, True, names,
                      [[0, 0, 0], [128, 0, 0], [0, 128, 0]])[2]


def _predict_onnx(t, onnx_file, *flags):
    return ['d2lfcn.predict', t.photo(), '--onnx', onnx_file, '--out-dir', t.out, *flags]


DEPLOY_FAULTS = [
    Fault('export-onnx-params-missing',
          lambda t: _export(t, '--format', 'onnx')[:1] + [
              '--params', str(t.tmp / 'none.params'), '--out-dir', t.out, '--format', 'onnx'],
          'none.params does not exist; pass --params'),
    Fault('export-onnx-params-damaged',
          lambda t: _export(t, '--format', 'onnx')[:1] + [
              '--params', t.write(str(t.tmp / 'bad.params'), os.urandom(500)),
              '--out-dir', t.out, '--format', 'onnx'],
          'is corrupt or not an MXNet .params file'),
    Fault('export-onnx-out-dir-is-a-file',
          lambda t: _export(t, '--format', 'onnx') + ['--out-dir', t.write(str(t.tmp / 'f'),
                                                                          b'x')],
          'is a file, not a folder'),
    Fault('export-onnx-out-dir-read-only',
          lambda t: _export(t, '--format', 'onnx') + ['--out-dir', _read_only(t, 'ro')],
          'cannot write there (Permission denied)'),
    Fault('export-onnx-wrong-arch', lambda t: _export(t, '--format', 'onnx', '--arch', 'fcn8s'),
          'holds an fcn32s, not an fcn8s; pass --arch fcn32s'),
    Fault('predict-onnx-missing',
          lambda t: _predict_onnx(t, str(t.tmp / 'none.onnx')),
          'none.onnx does not exist; pass --onnx'),
    Fault('predict-onnx-damaged',
          lambda t: _predict_onnx(t, t.write(str(t.tmp / 'bad.onnx'), os.urandom(300))),
          'bad.onnx is damaged or not a model'),
    Fault('predict-onnx-tile', lambda t: _predict_onnx(t, _onnx(t), '--mode', 'tile'),
          '--mode tile: runs with --params (MXNet)'),
    Fault('predict-onnx-wrong-arch', lambda t: _predict_onnx(t, _onnx(t), '--arch', 'fcn8s'),
          'holds an fcn32s, not --arch fcn8s'),
]


# ---------------------------------------- faults: your own dataset folder

def _folder(t):
    """Return a writable copy of the tiny VOC set in the plain folder layout."""
    dst = t.tmp / 'dataset'
    if not dst.exists():
        for sub in ('images', 'masks'):
            (dst / sub).mkdir(parents=True)
        for split in ('train', 'val'):
            names = t.names(split)
            (dst / f'{split}.txt').write_text('\n'.join(names) + '\n')
            for name in names:
                shutil.copy(t.jpg(name, split), dst / 'images' / f'{name}.jpg')
                ids = np.array(Image.open(t.png(name, split)))  # palette indices
                Image.fromarray(ids).save(dst / 'masks' / f'{name}.png')
        (dst / 'classes.txt').write_text('\n'.join(voc.VOC_CLASSES) + '\n')
    return dst


def _mask(t, edit):
    dst = _folder(t)
    mask = dst / 'masks' / f'{t.names()[0]}.png'
    edit(mask)
    return t.train(data=str(dst))


def _value_21(mask):
    ids = np.array(Image.open(mask))
    ids[1, 1] = 21
    Image.fromarray(ids).save(mask)


FOLDER_FAULTS = [
    Fault('folder-mask-value-21', lambda t: _mask(t, _value_21),
          'mask value 21 is neither a class index 0..20'),
    Fault('folder-mask-rgb',
          lambda t: _mask(t, lambda m: Image.open(m).convert('RGB').save(m)),
          'an RGB mask; save masks as single-channel PNGs of class indices'),
    Fault('folder-mask-smaller-than-image',
          lambda t: _mask(t, lambda m: Image.fromarray(np.array(Image.open(m))[:-2]).save(m)),
          'but its image'),
    Fault('folder-image-without-mask', lambda t: _mask(t, os.remove), 'no mask for it'),
    Fault('folder-mask-without-image',
          lambda t: (os.remove(_folder(t) / 'images' / f'{t.names()[0]}.jpg'),
                     t.train(data=str(_folder(t))))[1],
          'no image for it'),
    Fault('folder-empty-class-name',
          lambda t: ((_folder(t) / 'classes.txt').write_text('background\n \ncat\n'),
                     t.train(data=str(_folder(t))))[1],
          'classes.txt, line 2: empty class name'),
    Fault('folder-duplicate-class-name',
          lambda t: ((_folder(t) / 'classes.txt').write_text('background\ncat\ncat\n'),
                     t.train(data=str(_folder(t))))[1],
          "classes.txt, line 3: class 'cat' again (first on line 2)"),
    Fault('folder-train-txt-without-val-txt',
          lambda t: (os.remove(_folder(t) / 'val.txt'), t.train(data=str(_folder(t))))[1],
          'train.txt without'),
]


FAULTS = (VOC_FAULTS + PREDICT_FAULTS + DOWNLOAD_FAULTS + ARCHIVE_FAULTS + RUN_FAULTS
          + DEPLOY_FAULTS + FOLDER_FAULTS)


# ------------------------------------------------------------ the test

@pytest.fixture(scope='module')
def params(tmp_path_factory):
    """FCN weights for 3 classes, as python -m d2lfcn.train would save them."""
    from d2lfcn.model import get_fcn
    from mxnet import nd
    net = get_fcn(num_classes=3, pretrained_base=False)
    net(nd.zeros((1, 3, 32, 32)))
    path = tmp_path_factory.mktemp('params') / 'fcn.params'
    net.save_parameters(str(path))
    return str(path)


def test_fault_ids_are_unique():
    ids = [f.id for f in FAULTS]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize('fault', FAULTS, ids=[f.id for f in FAULTS])
def test_fault_ends_in_one_line(fault, tmp_path, small_voc_dir, params, request):
    servers = []

    def server():  # started only for the rows that download
        if not servers:
            servers.append(request.getfixturevalue('server'))
        return servers[0]
    t = _Maker(tmp_path, small_voc_dir, params, server)
    try:
        argv = fault.make(t)
        before = _tree(tmp_path)
        if fault.fresh:
            assert not t.in_child and not callable(argv[0])
            done = subprocess.run([sys.executable, '-m', *argv], capture_output=True,
                                  env={**os.environ, **t.env}, cwd=str(tmp_path),
                                  timeout=300)
            code, out, err = (done.returncode, done.stdout.decode(errors='replace'),
                              done.stderr.decode(errors='replace'))
        else:
            code, out, err = run_forked(argv, t.env, t.in_child, cwd=str(tmp_path))
        after = _tree(tmp_path)
    finally:
        for fn in t.cleanup:
            fn()
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == fault.code, f'exit code {code}\nstdout: {out}\nstderr: {err}'
    assert fault.out in out, out
    if fault.code == 0:
        assert lines == [], err
    else:
        assert len(lines) == 1 and 'Traceback' not in err, err
        assert lines[0].startswith('error: ') and fault.fragment in lines[0], lines[0]
    left = sorted(after - before - set(fault.keeps))
    assert left == [], f'left behind: {left}'
    if (tmp_path / 'victim').exists():  # archive rows: the file outside is untouched
        st = (tmp_path / 'victim').stat()
        assert (st.st_nlink, (tmp_path / 'victim').read_bytes()) == (1, b'keep me')
