"""Handle what surrounds an FCN, in numpy alone: its input conventions and coloured class maps.

MXNet's path (`inference`) and the ONNX runtime's (`runtime`) share these,
so both feed the network the same pixels and colour its answer the same way;
importing this module loads no MXNet. Explained in chapters/fcn.md.
"""
import numpy as np

__all__ = ['STRIDE', 'FCN_ARCHS', 'IGNORE_LABEL', 'RGB_MEAN', 'RGB_STD', 'normalize_array',
           'ceil_to', 'pad_to_stride', 'voc_palette', 'full_palette', 'colorize', 'blend', 'add_legend']

STRIDE = 32  # the FCN's total downsampling: whole inputs must be multiples of it
FCN_ARCHS = ('fcn32s', 'fcn16s', 'fcn8s')
IGNORE_LABEL = 255  # void: in labels, the pixels no loss or score counts

# ImageNet statistics, which the pretrained ResNet backbone expects.
RGB_MEAN = (0.485, 0.456, 0.406)
RGB_STD = (0.229, 0.224, 0.225)


def normalize_array(img):
    """Scale an (H, W, 3) RGB uint8 array to [0, 1] and standardise it: (H, W, 3) float32.

    Explained in chapters/semantic-segmentation-and-dataset.md.
    """
    img = np.asarray(img, dtype=np.float32) / 255
    return (img - np.array(RGB_MEAN, dtype=np.float32)) / np.array(RGB_STD, dtype=np.float32)


def ceil_to(n, multiple=STRIDE):
    """Return the smallest multiple of `multiple` at least `n`."""
    return -(-n // multiple) * multiple


def pad_to_stride(x, stride=STRIDE):
    """Reflect-pad an (h, w, c) array at the bottom and right to multiples of `stride`.

    Reflection continues the image's own statistics; zero padding would paste
    an artificial grey (the mean colour) block next to the border.
    Explained in chapters/fcn.md.
    """
    height, width = ceil_to(x.shape[0], stride), ceil_to(x.shape[1], stride)
    return np.pad(x, ((0, height - x.shape[0]), (0, width - x.shape[1]), (0, 0)),
                  mode='reflect')


def voc_palette():
    """Return VOC's 256-entry palette as a (256, 3) uint8 array.

    Explained in chapters/semantic-segmentation-and-dataset.md.
    """
    # The devkit's colour map: the bits of the class id, spread over R, G, B.
    palette = np.zeros((256, 3), dtype=np.uint8)
    for i in range(256):
        c, r, g, b = i, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette[i] = (r, g, b)
    return palette


def full_palette(palette=None):
    """Return a (256, 3) uint8 colour table: `palette`'s colours first, then VOC's.

    Ids a dataset's palette does not colour (void, 255) keep VOC's colours.
    """
    table = voc_palette()
    if palette is not None:
        palette = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)[:256]
        table[:len(palette)] = palette
    return table


def colorize(pred, palette=None):
    """Colour an (H, W) class map with `palette` (default VOC's): (H, W, 3) uint8.

    Explained in chapters/fcn.md.
    """
    pred = np.asarray(pred).astype(np.int64)
    if pred.size and (pred.min() < 0 or pred.max() > 255):
        raise ValueError('class ids must lie in 0..255')
    return full_palette(palette)[pred]  # (H, W, 3)


def blend(img, pred, alpha=0.5, palette=None):
    """Blend the colours of `pred` into `img`, leaving background (class 0) as it is.

    Explained in chapters/fcn.md.
    """
    if not 0 <= alpha <= 1:  # also refuses NaN
        raise ValueError(f'alpha must lie in [0, 1], not {alpha}')
    img, pred = np.asarray(img), np.asarray(pred)
    colour = colorize(pred, palette).astype(np.float32)
    # Background's colour is black: blending it would only darken the photo.
    mixed = np.where((pred != 0)[..., None], (1 - alpha) * img + alpha * colour, img)
    return np.clip(np.round(mixed), 0, 255).astype(np.uint8)  # (H, W, 3)


_SWATCH, _ROW, _MARGIN = 12, 18, 6  # legend sizes in pixels


def add_legend(img, pred, class_names, palette=None):
    """Return `img` with a legend below it: the colour and name of each class in `pred`.

    Background (class 0) is left out, as `blend` leaves it uncoloured.
    """
    from PIL import Image, ImageDraw, ImageFont
    palette = full_palette(palette)
    present = [int(c) for c in np.unique(pred) if c != 0 and c < len(class_names)]
    if not present:
        return np.asarray(img)
    font = ImageFont.load_default()
    draw = ImageDraw.Draw(Image.new('RGB', (1, 1)))
    width = max(_MARGIN * 3 + _SWATCH + int(draw.textlength(class_names[c], font=font))
                for c in present)
    height, img_width = img.shape[0], img.shape[1]
    canvas = Image.new('RGB', (max(img_width, width), height + _MARGIN + _ROW * len(present)),
                       'white')
    canvas.paste(Image.fromarray(np.asarray(img, dtype=np.uint8)), (0, 0))
    draw = ImageDraw.Draw(canvas)
    for row, c in enumerate(present):
        top = height + _MARGIN + row * _ROW
        draw.rectangle([_MARGIN, top, _MARGIN + _SWATCH, top + _SWATCH],
                       fill=tuple(int(v) for v in palette[c]), outline='black')
        draw.text((2 * _MARGIN + _SWATCH, top), class_names[c], fill='black', font=font)
    return np.asarray(canvas)
