"""Generate a small VOC-layout segmentation dataset that can be learned offline.

Explained in chapters/semantic-segmentation-and-dataset.md.
"""
import hashlib
import json
import os
import shutil
import tempfile

import cv2
import numpy as np
from PIL import Image

from .utils import UserError, default_data_dir
from .segmaps import IGNORE_LABEL, voc_palette
from .voc import VOC_CLASSES

__all__ = ['SYNTHETIC_CLASSES', 'DEMO_VOC_PARAMS', 'make_synthetic_voc', 'demo_voc_dir']

_VERSION = 1  # bump when the drawing changes, so cached demo sets are remade

# Each class has its own shape, base colour (RGB) and texture; instances vary
# in colour, position, scale and rotation, and may occlude each other.
_STYLES = {
    1: ('triangle', (185, 195, 215), 'smooth'),    # aeroplane
    6: ('box', (235, 190, 35), 'hstripes'),        # bus
    8: ('ellipse', (205, 110, 45), 'spots'),       # cat
    15: ('capsule', (225, 150, 135), 'vstripes'),  # person
    16: ('star', (45, 150, 60), 'checker'),        # potted plant
}
SYNTHETIC_CLASSES = tuple(_STYLES)

# The demo set `--demo` trains on; small enough to train within minutes on a CPU.
DEMO_VOC_PARAMS = dict(num_train=300, num_val=100, min_size=96, max_size=256,
                       small_size=128, small_fraction=0.15, seed=0)


def _shape_polygon(shape, cx, cy, size, angle):
    """Return the (n, 2) int32 outline of a class shape centred at (cx, cy)."""
    if shape == 'triangle':
        pts = [(0, -0.55), (0.5, 0.45), (-0.5, 0.45)]
    elif shape == 'box':
        pts = [(-0.5, -0.28), (0.5, -0.28), (0.5, 0.28), (-0.5, 0.28)]
    elif shape == 'ellipse':
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        pts = np.stack([0.45 * np.cos(t), 0.36 * np.sin(t)], 1)
    elif shape == 'capsule':  # a tall body with rounded ends
        t = np.linspace(0, np.pi, 24)
        top = np.stack([0.18 * np.cos(t), -0.32 - 0.18 * np.sin(t)], 1)
        bottom = np.stack([-0.18 * np.cos(t), 0.32 + 0.18 * np.sin(t)], 1)
        pts = np.concatenate([bottom, top])
    else:  # a five-pointed star
        t = np.arange(10) * np.pi / 5 - np.pi / 2
        r = np.where(np.arange(10) % 2 == 0, 0.5, 0.22)
        pts = np.stack([r * np.cos(t), r * np.sin(t)], 1)
    pts = np.asarray(pts, dtype=np.float64) * size
    c, s = np.cos(angle), np.sin(angle)
    pts = pts @ np.array([[c, s], [-s, c]])
    return np.round(pts + (cx, cy)).astype(np.int32)


def _texture(kind, yy, xx, rng):
    """Return a pattern in [-1, 1] over the pixel grid (yy, xx)."""
    period = rng.uniform(5, 8)
    phase = rng.uniform(0, 2 * np.pi)
    if kind == 'hstripes':
        return np.sin(2 * np.pi * yy / period + phase)
    if kind == 'vstripes':
        return np.sin(2 * np.pi * xx / period + phase)
    if kind == 'checker':
        return np.sign(np.sin(np.pi * yy / period + phase) * np.sin(np.pi * xx / period))
    if kind == 'spots':
        dots = np.sin(2 * np.pi * yy / period + phase) * np.sin(2 * np.pi * xx / period)
        return np.where(dots > 0.5, -1.0, 0.3)
    return 0.3 * np.sin(2 * np.pi * (xx + yy) / (20 * period) + phase)  # smooth


def _background(height, width, rng):
    """Return a (H, W, 3) float RGB background: blotchy colours plus fine grain."""
    coarse = rng.uniform(40, 200, size=(4, 5, 3)).astype(np.float32)
    img = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    grain = rng.standard_normal((height // 4 + 1, width // 4 + 1), dtype=np.float32)
    grain = cv2.resize(grain, (width, height), interpolation=cv2.INTER_LINEAR)
    return img * (1 + 0.12 * grain[:, :, None])  # (H, W, 3) float32


def _image_size(rng, p):
    """Draw (height, width); a fraction of images has one side below `small_size`."""
    if p['sizes']:
        return tuple(p['sizes'][rng.integers(len(p['sizes']))])
    lo = min(p['small_size'], p['max_size'])
    h, w = rng.integers(lo, p['max_size'] + 1, size=2)
    if rng.random() < p['small_fraction'] and p['min_size'] < lo:
        small = rng.integers(p['min_size'], lo)
        h, w = (small, w) if rng.random() < 0.5 else (h, small)
    return int(h), int(w)


def _draw_example(rng, p):
    """Return one (bgr uint8 image, uint8 label with void bands) pair."""
    height, width = _image_size(rng, p)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = _background(height, width, rng)
    label = np.zeros((height, width), dtype=np.uint8)
    for _ in range(rng.integers(1, p['max_objects'] + 1)):
        cls = int(p['classes'][rng.integers(len(p['classes']))])
        shape, color, texture = _STYLES[cls]
        size = rng.uniform(0.35, 0.8) * min(height, width)
        cx, cy = rng.uniform(0.1, 0.9) * width, rng.uniform(0.1, 0.9) * height
        mask = np.zeros_like(label)
        angle = rng.uniform(-0.4, 0.4)
        cv2.fillPoly(mask, [_shape_polygon(shape, cx, cy, size, angle)], 1)
        mask = mask.astype(bool)
        rgb = np.clip(np.array(color) + rng.normal(0, 12, 3), 0, 255) * rng.uniform(0.8, 1.15)
        shade = 1 + 0.3 * _texture(texture, yy, xx, rng)[mask]
        img[mask] = rgb[None, :] * shade[:, None]  # later objects occlude earlier ones
        label[mask] = cls
    # VOC marks a thin band where labels meet as void: any pixel whose
    # neighbourhood holds two different labels.
    kernel = np.ones((2 * p['void_radius'] + 1,) * 2, dtype=np.uint8)
    edges = cv2.dilate(label, kernel) != cv2.erode(label, kernel)
    label[edges] = IGNORE_LABEL
    img = cv2.GaussianBlur(img, (3, 3), 0.6)
    img += 4 * rng.standard_normal(img.shape, dtype=np.float32)  # sensor noise
    bgr = np.clip(img[:, :, ::-1], 0, 255).astype(np.uint8)
    return bgr, label


def _write_jpeg(path, bgr):
    # Encode, then write the bytes: cv2.imwrite crashes on non-UTF-8 file names.
    with open(path, 'wb') as f:
        f.write(cv2.imencode('.jpg', bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())


def _write_list(path, names):
    with open(path, 'w') as f:
        f.write(''.join(n + '\n' for n in names))


def _write_tree(folder, params, names, layout):
    """Write every image, label and split file of a dataset into `folder`, in `layout`."""
    voc = layout == 'voc'
    images, labels, splits = (('JPEGImages', 'SegmentationClass',
                               os.path.join('ImageSets', 'Segmentation')) if voc
                              else ('images', 'masks', ''))
    for sub in (images, labels, splits):
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
    palette = voc_palette().ravel().tolist()
    for index, name in enumerate(names['train'] + names['val']):
        rng = np.random.default_rng([params['seed'], index])
        bgr, label = _draw_example(rng, params)
        _write_jpeg(os.path.join(folder, images, name + '.jpg'), bgr)
        png = Image.fromarray(label)  # mode 'L': a grey mask of class ids ...
        if voc:
            png.putpalette(palette)   # ... or a palette PNG like VOC's
        png.save(os.path.join(folder, labels, name + '.png'))
    lists = [('train', names['train']), ('val', names['val'])]
    if voc:
        lists.append(('trainval', sorted(names['train'] + names['val'])))
    for split, listed in lists:
        _write_list(os.path.join(folder, splits, split + '.txt'), listed)
    if not voc:
        _write_list(os.path.join(folder, 'classes.txt'), VOC_CLASSES)
    with open(os.path.join(folder, 'synthetic.json'), 'w') as f:
        json.dump(params, f, sort_keys=True)  # written last: marks the set complete


def read_params(voc_dir):
    """Return the parameters a generated set at `voc_dir` was made with, or None."""
    try:
        with open(os.path.join(voc_dir, 'synthetic.json')) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def make_synthetic_voc(root, num_train=300, num_val=100, min_size=96, max_size=256,
                       small_size=128, small_fraction=0.15, seed=0, classes=None,
                       max_objects=3, void_radius=1, sizes=None, layout='voc'):
    """Generate a deterministic VOC-layout dataset under `root`; return its VOC2012 folder.

    Parameters
    ----------
    root : str
        The dataset goes to root/VOCdevkit/VOC2012 (JPEGImages/*.jpg,
        SegmentationClass/*.png palette PNGs with 255 void bands,
        ImageSets/Segmentation/{train,val,trainval}.txt).
    num_train, num_val : int
        Number of images in train.txt and val.txt.
    min_size, max_size, small_size, small_fraction : int, int, int, float
        Sides are drawn from [small_size, max_size]; a `small_fraction` of the
        images gets one side from [min_size, small_size) instead, so that some
        are smaller than a crop of small_size.
    seed : int
        Same seed and parameters give byte-identical files.
    classes : sequence of int, optional
        VOC class ids to draw, a subset of SYNTHETIC_CLASSES (default: all).
    max_objects : int
        Each image has 1..max_objects objects.
    void_radius : int
        Half-width in pixels of the void band where two labels meet.
    sizes : sequence of (height, width), optional
        Draw each image's size from this list instead (e.g. VOC-like 375x500).
    layout : {'voc', 'folder'}
        'folder' writes the same files in the plain layout of `maskfolder`
        instead (root/dataset: images/, masks/ of grey PNGs, classes.txt with
        VOC's 21 names, train.txt, val.txt), and returns that folder.

    A complete existing set made with the same parameters is reused as is;
    the set is built in a temporary folder and renamed into place when done.

    Explained in chapters/semantic-segmentation-and-dataset.md.
    """
    classes = list(SYNTHETIC_CLASSES if classes is None else classes)
    unknown = [c for c in classes if c not in _STYLES]
    if unknown or not classes:
        raise ValueError(f'classes must be a non-empty subset of {SYNTHETIC_CLASSES} '
                         f'({[VOC_CLASSES[c] for c in SYNTHETIC_CLASSES]}), not {classes}')
    if not 0 < min_size <= max_size:
        raise ValueError(f'need 0 < min_size <= max_size, got {min_size}, {max_size}')
    params = dict(version=_VERSION, num_train=int(num_train), num_val=int(num_val),
                  min_size=int(min_size), max_size=int(max_size),
                  small_size=int(small_size), small_fraction=float(small_fraction),
                  seed=int(seed), classes=[int(c) for c in classes],
                  max_objects=int(max_objects), void_radius=int(void_radius),
                  sizes=[[int(h), int(w)] for h, w in sizes] if sizes else None)
    if layout not in ('voc', 'folder'):
        raise ValueError(f"layout must be 'voc' or 'folder', not {layout!r}")
    voc_dir = os.path.join(os.fspath(root), *(('VOCdevkit', 'VOC2012') if layout == 'voc'
                                              else ('dataset',)))
    if os.path.exists(voc_dir):
        return _reuse(voc_dir, params)
    names = {'train': [f'synth_{i:06d}' for i in range(num_train)],
             'val': [f'synth_{i:06d}' for i in range(num_train, num_train + num_val)]}
    parent = os.path.dirname(voc_dir)
    os.makedirs(parent, exist_ok=True)
    _remove_abandoned(parent)
    # The PID in the name tells a later process whether the builder still runs.
    tmp = tempfile.mkdtemp(prefix=f'.VOC2012.tmp-{os.getpid()}-', dir=parent)
    try:
        _write_tree(os.path.join(tmp, 'VOC2012'), params, names, layout)
        try:
            os.rename(os.path.join(tmp, 'VOC2012'), voc_dir)
        except OSError:
            if not os.path.isdir(voc_dir):
                raise
            return _reuse(voc_dir, params)  # another process finished first
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return voc_dir


def _remove_abandoned(parent):
    """Remove half-built sets whose builder process is gone (killed mid-way)."""
    for name in os.listdir(parent):
        if not name.startswith('.VOC2012.tmp-'):
            continue
        try:
            os.kill(int(name.split('-')[1]), 0)  # signal 0: is it alive?
        except (ValueError, IndexError, ProcessLookupError):
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
        except PermissionError:
            pass  # alive, and another user's


def _reuse(voc_dir, params):
    """Return an existing complete set made with `params`, else raise `UserError`."""
    if read_params(voc_dir) != params:
        raise UserError(f'{voc_dir}: already exists but is not a synthetic set made with '
                        'these parameters; delete it or choose another folder')
    return voc_dir


def demo_voc_dir(data_dir=None, layout='voc'):
    """Return the VOC2012 folder of the demo dataset, generating it on first use.

    It lives in `data_dir` (default: `default_data_dir()`) under a name that
    changes with DEMO_VOC_PARAMS, so a stale set is never reused.
    layout='folder' returns the same images and labels in `maskfolder`'s layout.

    Explained in chapters/semantic-segmentation-and-dataset.md.
    """
    data_dir = default_data_dir() if data_dir is None else os.fspath(data_dir)
    key = json.dumps(dict(DEMO_VOC_PARAMS, version=_VERSION), sort_keys=True)
    name = f"demo-{layout}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"
    return make_synthetic_voc(os.path.join(data_dir, name), **DEMO_VOC_PARAMS,
                              layout=layout)
