"""Draw the book's schematic figures: FCN layout, transposed convolutions, VOC colours.

Every function returns a matplotlib Figure; `plotting.save_figure` writes one to disk.
The numbers drawn come from the library (`trans_conv`, `kernel2matrix`,
`conv_output_shape`, ...), so a figure cannot drift from the code it shows.
Explained in chapters/index.md.
"""
import numpy as np
from mxnet import nd

from .conv import (conv_output_shape, kernel2matrix, trans_conv,
                   transposed_conv_output_shape, upsample_bilinear)
from .voc import VOC_CLASSES, VOC_COLORMAP, VOC_VOID_COLOR, read_voc_images

__all__ = ['draw_fcn_architecture', 'draw_trans_conv',
           'draw_conv_as_matrix', 'draw_bilinear_upsampling', 'draw_voc_legend',
           'draw_voc_samples', 'sample_photo']

# Soft colours, one per input element in the transposed-convolution figures.
_PALETTE = ['#a6cee3', '#fdbf6f', '#b2df8a', '#fb9a99', '#cab2d6', '#ffff99',
            '#8dd3c7', '#fccde5', '#d9d9d9']
_PLAIN = '#eef3fb'


def _plt():
    # pyplot is imported on the first drawing, so `import d2lfcn` stays light.
    from matplotlib import pyplot
    return pyplot


def _patches():
    from matplotlib import patches
    return patches


def sample_photo():
    """Return matplotlib's Grace Hopper photo as a (600, 512, 3) uint8 array.

    Explained in chapters/transposed-conv.md.
    """
    from matplotlib.cbook import get_sample_data
    with get_sample_data('grace_hopper.jpg') as f:
        return _plt().imread(f, format='jpg')


def _fmt(v):
    """Format a number for a grid cell: integers without a decimal point."""
    return str(int(round(v))) if abs(v - round(v)) < 1e-6 else f'{v:.2f}'


def _grid(ax, values, x0, y0, colors=None, title=None, blank=None, hatch=None,
          fontsize=11):
    """Draw a table of numbers with its top-left corner at (x0, y0) in cell units.

    `colors[i][j]` fills cell (i, j); `blank[i][j]` leaves it empty; cells
    where `hatch[i][j]` is true are greyed out and crossed.
    """
    values = np.asarray(values, dtype=np.float64)
    rows, cols = values.shape
    for i in range(rows):
        for j in range(cols):
            crossed = hatch is not None and hatch[i][j]
            face = '#dddddd' if crossed else (colors[i][j] if colors else _PLAIN)
            ax.add_patch(_patches().Rectangle(
                (x0 + j, y0 + i), 1, 1, facecolor=face, edgecolor='#555555',
                hatch='//' if crossed else None, linewidth=1))
            if blank is None or not blank[i][j]:
                ax.text(x0 + j + 0.5, y0 + i + 0.5, _fmt(values[i, j]),
                        ha='center', va='center', fontsize=fontsize,
                        color='#888888' if crossed else 'black')
    if title:
        ax.text(x0 + cols / 2, y0 - 0.25, title, ha='center', va='bottom',
                fontsize=fontsize)


def _canvas(width, height, scale=0.55):
    """Return (fig, ax) with data units = grid cells, y pointing down."""
    fig, ax = _plt().subplots(figsize=(width * scale, height * scale))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_aspect('equal')
    ax.axis('off')
    return fig, ax


def draw_trans_conv(X=((0, 1), (2, 3)), K=((0, 1), (2, 3)), strides=1, padding=0):
    """Draw a transposed convolution as a sum of kernel copies, one per input element.

    The defaults are the 2x2 example of chapters/transposed-conv.md; pass
    strides=2 for the spread-out copies or padding=1 to see the border removed.
    Explained in chapters/transposed-conv.md.
    """
    X, K = np.asarray(X, dtype=np.float32), np.asarray(K, dtype=np.float32)
    (n_h, n_w), (k_h, k_w) = X.shape, K.shape
    full = trans_conv(nd.array(X), nd.array(K), strides).asnumpy()  # before cropping
    out = trans_conv(nd.array(X), nd.array(K), strides, padding).asnumpy()
    f_h, f_w = full.shape
    copies = n_h * n_w
    width = 1 + max(n_w, k_w) + 1.5 + copies * (f_w + 1) + 1 + f_w + (
        2.5 + out.shape[1] if padding else 0)
    height = 2 + max(n_h + k_h + 1.5, f_h) + 1
    fig, ax = _canvas(width, height)
    colors = [[_PALETTE[(i * n_w + j) % len(_PALETTE)] for j in range(n_w)]
              for i in range(n_h)]
    _grid(ax, X, 1, 1.5, colors, 'input')
    _grid(ax, K, 1, 1.5 + n_h + 1.5, title='kernel')
    x = 1 + max(n_w, k_w) + 1.5
    for i in range(n_h):
        for j in range(n_w):
            copy = np.zeros((f_h, f_w), dtype=np.float32)
            top, left = i * strides, j * strides
            copy[top:top + k_h, left:left + k_w] = X[i, j] * K
            placed = np.zeros((f_h, f_w), dtype=bool)
            placed[top:top + k_h, left:left + k_w] = True
            cell = [[colors[i][j] if placed[a, b] else 'white' for b in range(f_w)]
                    for a in range(f_h)]
            _grid(ax, copy, x, 1.5, cell, f'{_fmt(X[i, j])} x kernel', blank=~placed)
            sign = '+' if i * n_w + j < copies - 1 else '='
            ax.text(x + f_w + 0.5, 1.5 + f_h / 2, sign, ha='center', va='center',
                    fontsize=16)
            x += f_w + 1
    border = None
    if padding:
        border = np.ones((f_h, f_w), dtype=bool)
        border[padding:f_h - padding, padding:f_w - padding] = False
    _grid(ax, full, x, 1.5, title='sum' if padding else 'output', hatch=border)
    if padding:
        ax.annotate('', xy=(x + f_w + 2, 1.5 + f_h / 2), xytext=(x + f_w + 0.3, 1.5 + f_h / 2),
                    arrowprops=dict(arrowstyle='->', lw=1.5))
        _grid(ax, out, x + f_w + 2.5, 1.5 + (f_h - out.shape[0]) / 2, title='output')
    caption = (f'transposed convolution: {n_h}x{n_w} input, {k_h}x{k_w} kernel, '
               f'stride {strides}, padding {padding} -> {out.shape[0]}x{out.shape[1]} output')
    if padding:
        caption += f' (padding removes {padding} row/column on each side)'
    ax.text(width / 2, height - 0.3, caption, ha='center', va='bottom', fontsize=11)
    return fig


def draw_conv_as_matrix(X=None, K=((1, 2), (3, 4))):
    """Draw y = W x for a convolution and W.T y for its transposed convolution.

    Explained in chapters/transposed-conv.md.
    """
    K = np.asarray(K, dtype=np.float32)
    X = np.arange(9, dtype=np.float32).reshape(3, 3) if X is None else np.asarray(
        X, dtype=np.float32)
    W = kernel2matrix(K, X.shape).asnumpy()  # (out_h * out_w, in_h * in_w)
    x = X.reshape(-1, 1)
    y = W @ x                                 # the convolution's output, flattened
    z = W.T @ y                               # the transposed convolution's output
    k_index = np.zeros(W.shape, dtype=int) - 1  # which kernel entry fills each cell
    out_h, out_w = conv_output_shape(X.shape, K.shape)
    for r in range(out_h * out_w):
        i, j = divmod(r, out_w)
        for a in range(K.shape[0]):
            for b in range(K.shape[1]):
                k_index[r, (i + a) * X.shape[1] + j + b] = a * K.shape[1] + b
    cell = [[_PALETTE[k] if k >= 0 else 'white' for k in row] for row in k_index]
    blank = k_index < 0
    rows, cols = W.shape
    width = cols + 1 + 1 + 1 + 1 + 1 + 3 + rows + 1 + 1 + 1 + 1 + 1
    height = cols + 3.5
    fig, ax = _canvas(width, height)
    top = 1.5
    _grid(ax, W, 0.5, top, cell, f'W ({rows} x {cols})', blank=blank)
    ax.text(cols + 1, top + rows / 2, 'x', ha='center', va='center', fontsize=14)
    _grid(ax, x, cols + 1.5, top, title='x')
    ax.text(cols + 3, top + rows / 2, '=', ha='center', va='center', fontsize=16)
    _grid(ax, y, cols + 3.5, top, title='y')
    left = cols + 7.5
    cell_t = [list(r) for r in zip(*cell)]
    _grid(ax, W.T, left, top, cell_t, f'W.T ({cols} x {rows})', blank=blank.T)
    ax.text(left + rows + 0.5, top + cols / 2, 'x', ha='center', va='center', fontsize=14)
    _grid(ax, y, left + rows + 1, top, title='y')
    ax.text(left + rows + 2.5, top + cols / 2, '=', ha='center', va='center', fontsize=16)
    _grid(ax, z, left + rows + 3, top, title='z')
    ax.text((cols + 4.5) / 2, height - 0.5,
            f'convolution: {X.shape[0]}x{X.shape[1]} input x, row by row -> '
            f'{out_h}x{out_w} output y', ha='center', va='bottom', fontsize=11)
    ax.text(left + (rows + 4) / 2, height - 0.5,
            'transposed convolution: y -> z = trans_conv(y, K)',
            ha='center', va='bottom', fontsize=11)
    return fig


def _box3d(ax, x, y, w, h, d, color, label=None, below=None):
    """Draw a feature map as a slab: front w x h at (x, y) and depth d receding up-right."""
    dx, dy = 0.6 * d, 0.45 * d
    face = _patches().Rectangle((x, y), w, h, facecolor=color, edgecolor='#333333')
    top = _patches().Polygon([(x, y + h), (x + dx, y + h + dy), (x + w + dx, y + h + dy),
                            (x + w, y + h)], facecolor=color, edgecolor='#333333',
                           alpha=0.75)
    side = _patches().Polygon([(x + w, y), (x + w + dx, y + dy), (x + w + dx, y + h + dy),
                             (x + w, y + h)], facecolor=color, edgecolor='#333333',
                            alpha=0.55)
    for patch in (side, top, face):
        ax.add_patch(patch)
    if below:
        ax.text(x + (w + dx) / 2, y - 0.35, below, ha='center', va='top', fontsize=9)
    if label:
        ax.text(x + (w + dx) / 2, y + h + dy + 0.25, label, ha='center', va='bottom',
                fontsize=10)
    return x + w + dx


def _arrow(ax, x0, x1, y, text):
    ax.annotate('', xy=(x1, y), xytext=(x0, y),
                arrowprops=dict(arrowstyle='-|>', lw=1.5, color='#333333'))
    ax.text((x0 + x1) / 2, y + 0.3, text, ha='center', va='bottom', fontsize=9)


def draw_fcn_architecture(height=320, width=480, num_classes=21):
    """Draw D2L's FCN: ResNet-18 features, a 1x1 convolution, a 32x transposed convolution.

    The shapes printed are computed with the shape formulas of conv.py.
    Explained in chapters/fcn.md.
    """
    # resnet18_v2: conv0 (7x7, stride 2) and a max pool (3x3, stride 2) give
    # stage1 at stride 4; stages 2, 3 and 4 halve again (3x3 convs, stride 2).
    shape = conv_output_shape((height, width), 7, strides=2, padding=3)
    shape = conv_output_shape(shape, 3, strides=2, padding=1)
    stages = [(64, shape)]
    for channels in (128, 256, 512):
        shape = conv_output_shape(shape, 3, strides=2, padding=1)
        stages.append((channels, shape))
    fh, fw = shape
    oh, ow = transposed_conv_output_shape((fh, fw), 64, strides=32, padding=16)
    fig, ax = _plt().subplots(figsize=(14, 4.4))
    ax.set_xlim(0, 34.5)
    ax.set_ylim(-2.6, 7.0)
    ax.set_aspect('equal')
    ax.axis('off')

    def side(n):  # drawn length of a spatial side: compressed, but ordered
        return 0.7 + 4.3 * np.sqrt(n / max(height, width))

    def thick(channels):  # drawn thickness of a channel count
        return 0.15 + 0.28 * np.log2(max(channels, 2) / 2)

    x = _box3d(ax, 0.3, 0, thick(3), side(height), side(width) * 0.8, '#c6dbef',
               'image', f'3 x {height} x {width}')
    first = x + 0.4
    for i, (channels, (h, w)) in enumerate(stages):
        x = _box3d(ax, x + 0.4, 0, thick(channels), side(h), side(w) * 0.8, '#fdae6b',
                   None, f'{channels} x {h} x {w}')
    ax.plot([first, x], [-1.05, -1.05], color='#333333', lw=1)
    ax.text((first + x) / 2, -1.2, 'ResNet-18 v2 features (pretrained on ImageNet), '
            'global pooling and Dense removed: / 32', ha='center', va='top', fontsize=9)
    _arrow(ax, x + 0.2, x + 2.4, side(fh) / 2, f'1x1 conv\n512 -> {num_classes}')
    x = _box3d(ax, x + 2.6, 0, thick(num_classes), side(fh), side(fw) * 0.8, '#a1d99b',
               'scores', f'{num_classes} x {fh} x {fw}')
    _arrow(ax, x + 0.2, x + 3.4, side(fh) / 2,
           'transposed conv\nk 64, s 32, p 16\n(bilinear init)')
    x = _box3d(ax, x + 3.6, 0, thick(num_classes), side(oh), side(ow) * 0.8, '#74c476',
               'class scores', f'{num_classes} x {oh} x {ow}')
    _arrow(ax, x + 0.3, x + 2.5, side(oh) / 2, 'argmax\nover classes')
    _box3d(ax, x + 2.7, 0, 0.12, side(oh), side(ow) * 0.8, '#9e9ac8',
           'label map', f'{oh} x {ow}')
    ax.text(17.2, -2.3, f'a convolution with kernel 64, padding 16, stride 32 maps {height} to '
            f'({height} - 64 + 2*16 + 32) / 32 = {fh};\nthe transposed convolution with the same '
            f'kernel, padding and stride maps '
            f'{fh} x {fw} back to {oh} x {ow}', ha='center', va='center', fontsize=10,
            style='italic')
    return fig


def draw_bilinear_upsampling(img=None, scale=2, zoom=(slice(170, 215), slice(175, 245))):
    """Draw a photo, its bilinear upsampling by a transposed convolution, and zooms.

    Explained in chapters/transposed-conv.md.
    """
    img = sample_photo() if img is None else np.asarray(img)
    out = upsample_bilinear(img, scale).asnumpy()        # (sH, sW, 3), 0..255
    out = np.clip(np.round(out), 0, 255).astype(np.uint8)
    zy, zx = zoom
    big = (slice(zy.start * scale, zy.stop * scale), slice(zx.start * scale, zx.stop * scale))
    fig, axes = _plt().subplots(2, 2, figsize=(6, 6.4))
    panels = [(img, f'input {img.shape[0]} x {img.shape[1]}'),
              (out, f'transposed conv, stride {scale}: {out.shape[0]} x {out.shape[1]}'),
              (img[zy, zx], 'input, zoomed'), (out[big], 'output, same region')]
    for ax, (picture, title) in zip(axes.flat, panels):
        ax.imshow(picture, interpolation='nearest')
        ax.set_title(title, fontsize=10)
        ax.axis('off')
    fig.tight_layout()
    return fig


def draw_voc_legend():
    """Draw VOC's 21 class colours with ids and names, plus the void colour.

    Explained in chapters/semantic-segmentation-and-dataset.md.
    """
    entries = [(i, name, VOC_COLORMAP[i]) for i, name in enumerate(VOC_CLASSES)]
    entries.append((255, 'void', VOC_VOID_COLOR))  # the band around objects
    cols = 3
    rows = -(-len(entries) // cols)
    fig, ax = _plt().subplots(figsize=(11, 0.42 * rows + 0.3))
    ax.set_xlim(0, cols)
    ax.set_ylim(rows, 0)
    ax.axis('off')
    for n, (index, name, rgb) in enumerate(entries):
        c, r = divmod(n, rows)
        ax.add_patch(_patches().Rectangle((c + 0.02, r + 0.12), 0.12, 0.76,
                                        facecolor=np.array(rgb) / 255,
                                        edgecolor='#555555'))
        ax.text(c + 0.17, r + 0.5, f'{index:>3}  {name}', va='center', fontsize=10,
                family='monospace')
        ax.text(c + 0.97, r + 0.5, f'({rgb[0]}, {rgb[1]}, {rgb[2]})', va='center',
                ha='right', fontsize=8, color='#555555')
    return fig


def _blend(img, label_rgb, alpha=0.55):
    """Paint the label colours over an image, leaving background pixels untouched."""
    img = img.astype(np.float32)
    colour = label_rgb.astype(np.float32)
    painted = label_rgb.any(axis=2, keepdims=True)  # black is background
    return np.where(painted, (1 - alpha) * img + alpha * colour, img).astype(np.uint8)


def draw_voc_samples(voc_dir, num=4, is_train=True):
    """Draw `num` VOC examples: images, colour labels, and labels over the images.

    Explained in chapters/semantic-segmentation-and-dataset.md.
    """
    features, labels = read_voc_images(voc_dir, is_train, max_images=num)
    features = [f.asnumpy() for f in features]
    labels = [y.asnumpy() for y in labels]
    fig, axes = _plt().subplots(3, len(features), figsize=(2.2 * len(features), 5.6),
                             squeeze=False)
    rows = [('image', features), ('label', labels),
            ('overlay', [_blend(f, y) for f, y in zip(features, labels)])]
    for r, (name, pictures) in enumerate(rows):
        for c, picture in enumerate(pictures):
            ax = axes[r, c]
            ax.imshow(picture)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name)
    for c, y in enumerate(labels):
        present = [VOC_CLASSES[i] for i, rgb in enumerate(VOC_COLORMAP)
                   if i and (y == rgb).all(axis=2).any()]
        axes[0, c].set_title(', '.join(present), fontsize=9)
    fig.tight_layout()
    return fig



# --- chapters/fcn.md: FCN-32s, FCN-16s and FCN-8s as encoder and decoder ---

__all__ += ['draw_fcn_variants']


def _encoder_shapes(height, width):
    """Return [(name, channels, (h, w))] of resnet18_v2's features, input to stride 32."""
    shapes = [('image', 3, (height, width))]
    shape = conv_output_shape((height, width), 7, strides=2, padding=3)
    shapes.append(('conv0', 64, shape))                      # stride 2
    shape = conv_output_shape(shape, 3, strides=2, padding=1)
    shapes.append(('pool, stage1', 64, shape))               # stride 4
    for name, channels in (('stage2', 128), ('stage3', 256), ('stage4', 512)):
        shape = conv_output_shape(shape, 3, strides=2, padding=1)
        shapes.append((name, channels, shape))               # strides 8, 16, 32
    return shapes


def _node(ax, x, level, name, text, color):
    """Draw a feature map as a box at stride 2**level: its name above, its shape inside."""
    ax.add_patch(_patches().FancyBboxPatch((x - 0.45, -level - 0.36), 0.9, 0.72,
                                           boxstyle='round,pad=0.02', facecolor=color,
                                           edgecolor='#333333'))
    ax.text(x, -level, text, ha='center', va='center', fontsize=8, linespacing=1.1)
    ax.text(x, -level + 0.4, name, ha='center', va='bottom', fontsize=8,
            color='#333333')


def _link(ax, start, end, text=None, color='#333333', text_at=0.5, **kw):
    """Draw an arrow between two box edges, with `text` beside its middle."""
    ax.annotate('', xy=end, xytext=start,
                arrowprops=dict(arrowstyle='-|>', lw=1.2, color=color,
                                shrinkA=0, shrinkB=0))
    if text:
        x = start[0] + text_at * (end[0] - start[0])
        y = start[1] + text_at * (end[1] - start[1])
        ax.text(x, y, text, fontsize=8, color=color, **kw)


def draw_fcn_variants(height=320, width=480, num_classes=21):
    """Draw FCN-32s, FCN-16s and FCN-8s as one encoder and three decoders.

    A box's height on the page is its stride (1 at the top, 32 at the
    bottom); each box gives channels, then height x width, computed with
    conv.py's shape formulas, the arithmetic `get_fcn` builds.
    Explained in chapters/fcn.md.
    """
    encoder = _encoder_shapes(height, width)
    c = num_classes
    fig, axes = _plt().subplots(3, 1, figsize=(8.8, 8.4))
    for row, (ax, finest) in enumerate(zip(axes, (32, 16, 8))):
        ax.set_xlim(-1.3, 10.5)
        ax.set_ylim(-5.5, 1.0)
        ax.axis('off')
        ax.text(-1.25, 0.75, f'FCN-{finest}s', fontsize=11, weight='bold', va='center')
        for level in range(6):
            ax.text(-0.6, -level, f'/{2 ** level}', fontsize=8, color='#777777',
                    ha='center', va='center')
        for level, (name, channels, (h, w)) in enumerate(encoder):
            _node(ax, level, level, name, f'{channels}\n{h} x {w}',
                  '#c6dbef' if level == 0 else '#fdae6b')
            if level:
                _link(ax, (level - 1 + 0.3, -level + 1 - 0.36), (level - 0.3, -level + 0.36))
        # The decoder: score at stride 32, then one 2x step per skip.
        x, shape = 6.6, encoder[-1][2]
        _link(ax, (5.45, -5), (x - 0.45, -5))
        ax.text((5.45 + x - 0.45) / 2, -5.1, '1x1\nconv', fontsize=8, ha='center', va='top')
        _node(ax, x, 5, 'scores', f'{c}\n{shape[0]} x {shape[1]}', '#a1d99b')
        level = 5
        while 2 ** level > finest:
            shape = transposed_conv_output_shape(shape, 4, strides=2, padding=1)
            level -= 1
            nx = x + 1.0
            _link(ax, (x + 0.3, -level - 1 + 0.36), (nx - 0.3, -level - 0.36))
            ax.text(nx - 0.2, -level - 0.75, 'x2', fontsize=8, ha='left', va='center')
            _link(ax, (level + 0.45, -level), (nx - 0.45, -level),
                  f'skip: 1x1 conv of {encoder[level][0]}', color='#2171b5',
                  text_at=0.5, ha='center', va='bottom')
            x = nx
            _node(ax, x, level, 'sum', f'{c}\n{shape[0]} x {shape[1]}', '#a1d99b')
        s = 2 ** level
        out = transposed_conv_output_shape(shape, 2 * s, strides=s, padding=s // 2)
        nx = x + 1.3
        _link(ax, (x + 0.3, -level + 0.36), (nx - 0.25, -0.36),
              f'x{s}: transposed\nconv k {2 * s},\ns {s}, p {s // 2}', text_at=0.55,
              ha='left', va='top')
        _node(ax, nx, 0, 'class scores', f'{c}\n{out[0]} x {out[1]}', '#74c476')
        if row == 0:
            ax.text(2.5, 0.8, 'encoder: ResNet-18 v2 features', ha='center',
                    va='center', fontsize=9, style='italic')
            ax.text(7.2, 0.8, 'decoder', ha='center', va='center', fontsize=9,
                    style='italic')
    fig.tight_layout()
    return fig
