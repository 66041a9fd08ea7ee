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


def draw_trans_conv(X=((0, 1), (2, 3)), K=((0, 1), (2, 3)), strides=1, padding=0,
                    output_padding=0):
    """Draw a transposed convolution as a sum of kernel copies, one per input element.

    The defaults are the 2x2 example of chapters/transposed-conv.md; pass
    strides=2 for the spread-out copies or padding=1 to see the border removed
    (output_padding, at most padding, keeps rows and columns at the bottom and
    right). Explained in chapters/transposed-conv.md.
    """
    X, K = np.asarray(X, dtype=np.float32), np.asarray(K, dtype=np.float32)
    (n_h, n_w), (k_h, k_w) = X.shape, K.shape
    full = trans_conv(nd.array(X), nd.array(K), strides).asnumpy()  # before cropping
    out = trans_conv(nd.array(X), nd.array(K), strides, padding, output_padding).asnumpy()
    f_h, f_w = full.shape
    # The copies sit in a grid laid out like the input: copy (i, j) belongs to X[i, j].
    top, x0 = 1.5, 1 + max(n_w, k_w) + 1.5
    pitch_x, pitch_y = f_w + 1.2, f_h + 1.6
    grid_w, grid_h = n_w * pitch_x - 1.2, n_h * pitch_y - 1.6
    mid = top + grid_h / 2
    x_sum = x0 + grid_w + 1.2
    width = x_sum + f_w + (2.5 + out.shape[1] if padding else 0) + 1
    height = top + max(grid_h, n_h + k_h + 1.5) + (2.2 if padding else 1.6)
    fig, ax = _canvas(width, height)
    colors = [[_PALETTE[(i * n_w + j) % len(_PALETTE)] for j in range(n_w)]
              for i in range(n_h)]
    _grid(ax, X, 1, top, colors, 'input')
    _grid(ax, K, 1, top + n_h + 1.5, title='kernel')
    for i in range(n_h):
        for j in range(n_w):
            x, y = x0 + j * pitch_x, top + i * pitch_y
            copy = np.zeros((f_h, f_w), dtype=np.float32)
            first_row, first_col = i * strides, j * strides
            copy[first_row:first_row + k_h, first_col:first_col + k_w] = X[i, j] * K
            placed = np.zeros((f_h, f_w), dtype=bool)
            placed[first_row:first_row + k_h, first_col:first_col + k_w] = True
            cell = [[colors[i][j] if placed[a, b] else 'white' for b in range(f_w)]
                    for a in range(f_h)]
            _grid(ax, copy, x, y, cell, f'{_fmt(X[i, j])} x kernel', blank=~placed)
            if j < n_w - 1:
                ax.text(x + f_w + 0.6, y + f_h / 2, '+', ha='center', va='center',
                        fontsize=16)
        if i < n_h - 1:
            ax.text(x0 + grid_w / 2, top + i * pitch_y + f_h + 0.75, '+', ha='center',
                    va='center', fontsize=16)
    ax.text(x0 + grid_w + 0.6, mid, '=', ha='center', va='center', fontsize=16)
    border = None
    if padding:
        border = np.ones((f_h, f_w), dtype=bool)
        border[padding:f_h - padding + output_padding,
               padding:f_w - padding + output_padding] = False
    _grid(ax, full, x_sum, mid - f_h / 2, title='sum' if padding else 'output', hatch=border)
    if padding:
        ax.annotate('', xy=(x_sum + f_w + 2, mid), xytext=(x_sum + f_w + 0.3, mid),
                    arrowprops=dict(arrowstyle='->', lw=1.5))
        _grid(ax, out, x_sum + f_w + 2.5, mid - out.shape[0] / 2, title='output')
    caption = (f'transposed convolution: {n_h}x{n_w} input, {k_h}x{k_w} kernel, '
               f'stride {strides}, padding {padding}'
               + (f', output padding {output_padding}' if output_padding else '')
               + f' -> {out.shape[0]}x{out.shape[1]} output')
    if padding and not output_padding:
        caption += f'\n(padding removes {padding} row/column on each side)'
    elif output_padding:
        caption += (f'\n(padding removes {padding} row/column on each side; output padding '
                    f'keeps {output_padding} at the bottom and right)')
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
    width = cols + 1 + 1 + 1 + 1 + 1 + 3 + rows + 1 + 1 + 1 + 1 + 1 + 2
    height = cols + 3.5
    fig, ax = _canvas(width, height)
    top = 1.5
    mid = top + cols / 2                      # the tall vectors set the midline
    _grid(ax, W, 0.5, mid - rows / 2, cell, f'W ({rows} x {cols})', blank=blank)
    ax.text(cols + 1, mid, 'x', ha='center', va='center', fontsize=14)
    _grid(ax, x, cols + 1.5, top, title='x')
    ax.text(cols + 3, mid, '=', ha='center', va='center', fontsize=16)
    _grid(ax, y, cols + 3.5, mid - rows / 2, title='y')
    left = cols + 7.5
    cell_t = [list(r) for r in zip(*cell)]
    _grid(ax, W.T, left, top, cell_t, f'W.T ({cols} x {rows})', blank=blank.T)
    ax.text(left + rows + 0.5, mid, 'x', ha='center', va='center', fontsize=14)
    _grid(ax, y, left + rows + 1, mid - rows / 2, title='y')
    ax.text(left + rows + 2.5, mid, '=', ha='center', va='center', fontsize=16)
    _grid(ax, z, left + rows + 3, top, title='z')
    ax.text((cols + 4.5) / 2, height - 0.5,
            f'convolution: {X.shape[0]}x{X.shape[1]} input x, row by row -> '
            f'{out_h}x{out_w} output y', ha='center', va='bottom', fontsize=11)
    ax.text(left + (rows + 4) / 2, height - 0.5,
            "transposed convolution: y -> z = trans_conv(y, K), x's shape, not x",
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



# ------------------------------------------------------------------------------------
# Convolution figures of chapters/conv-layer.md (padding, stride, channels, receptive
# field) and the fractionally-strided view of chapters/transposed-conv.md.

from .conv import (conv_layers, corr2d, corr2d_multi_in,  # noqa: E402
                   corr2d_multi_in_out, receptive_field, stretch_input)

__all__ += ['draw_conv', 'draw_conv_multi_in', 'draw_conv_multi_out',
            'draw_receptive_field', 'draw_trans_conv_as_conv']

_EXAMPLE_X = ((0, 1, 2), (3, 4, 5), (6, 7, 8))  # D2L's 3x3 input
_EXAMPLE_K = ((0, 1), (2, 3))                     # D2L's 2x2 kernel
_WINDOWS = ['#ff7f00', '#1f78b4', '#33a02c']      # outline of each highlighted window
_ZERO_FILL = {1: '#d9d9d9', 2: '#fff2cc'}        # padding zeros, inserted zeros


def _pair(value):
    """Return `value` as an (h, w) tuple; an int stands for both axes."""
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _outline(ax, x, y, w, h, color):
    ax.add_patch(_patches().Rectangle((x, y), w, h, fill=False, edgecolor=color,
                                      linewidth=3.5, zorder=5))


def _products(window, kernel):
    """Return 'a×b + c×d + ... = s' for one window and the kernel, row by row."""
    terms = ' + '.join(f'{_fmt(a)}×{_fmt(b)}' for a, b in zip(window.ravel(), kernel.ravel()))
    return f'{terms} = {_fmt((window * kernel).sum())}'


def draw_conv(X=_EXAMPLE_X, K=_EXAMPLE_K, padding=0, strides=1, highlight=((0, 0),),
              kinds=None, input_title=None, kernel_title='kernel', caption=None):
    """Draw a cross-correlation: the padded input, the kernel, the output, chosen windows.

    `padding` and `strides` are Gluon's (per side; int or (h, w)); the output
    is `corr2d` of the padded input, taken every `strides` rows and columns.
    `kinds` marks cells of X drawn as zeros (1 padding, 2 inserted; see
    `stretch_input`). Explained in chapters/conv-layer.md.
    """
    X, K = np.asarray(X, dtype=np.float32), np.asarray(K, dtype=np.float32)
    (ph, pw), (sh, sw) = _pair(padding), _pair(strides)
    P = np.pad(X, ((ph, ph), (pw, pw)))
    kind = np.pad(np.zeros(X.shape, int) if kinds is None else np.asarray(kinds),
                  ((ph, ph), (pw, pw)), constant_values=1)
    out = corr2d(nd.array(P), nd.array(K)).asnumpy()[::sh, ::sw]
    assert out.shape == conv_output_shape(X.shape, K.shape, (sh, sw), (ph, pw))
    (n_h, n_w), (k_h, k_w), (o_h, o_w) = P.shape, K.shape, out.shape
    width = 1 + n_w + 1.5 + k_w + 1.5 + o_w + 1
    height = 1.5 + max(n_h, 3) + 0.5 + 0.8 * len(highlight) + 1.2
    fig, ax = _canvas(max(width, 14), height)
    top, mid = 1.5, 1.5 + n_h / 2
    fills = [[_ZERO_FILL.get(k, _PLAIN) for k in row] for row in kind]
    title = input_title or ('input' + (f', padding {padding}' if padding else ''))
    _grid(ax, P, 1, top, fills, title)
    ax.text(1 + n_w + 0.75, mid, '⋆', ha='center', va='center', fontsize=30)
    x_k = 1 + n_w + 1.5
    _grid(ax, K, x_k, mid - k_h / 2, title=kernel_title)
    ax.text(x_k + k_w + 0.75, mid, '=', ha='center', va='center', fontsize=16)
    x_o = x_k + k_w + 1.5
    out_fill = [[_PLAIN] * o_w for _ in range(o_h)]
    for n, (i, j) in enumerate(highlight):
        out_fill[i][j] = _WINDOWS[n]
    _grid(ax, out, x_o, mid - o_h / 2, out_fill,
          'output' + (f', stride {strides}' if strides != 1 else ''))
    for n, (i, j) in enumerate(highlight):
        _outline(ax, 1 + j * sw, top + i * sh, k_w, k_h, _WINDOWS[n])
        window = P[i * sh:i * sh + k_h, j * sw:j * sw + k_w]
        ax.text(1, top + max(n_h, 3) + 0.9 + 0.8 * n, _products(window, K), color=_WINDOWS[n],
                ha='left', va='center', fontsize=11)
    if caption is None:
        caption = (f'{X.shape[0]}x{X.shape[1]} input'
                   + (f', padded to {n_h}x{n_w}' if (ph, pw) != (0, 0) else '')
                   + f', {k_h}x{k_w} kernel' + (f', stride {strides}' if strides != 1 else '')
                   + f' -> {o_h}x{o_w} output')
    ax.text(1, height - 0.3, caption, ha='left', va='bottom', fontsize=11)
    return fig


def draw_conv_multi_in(X=(_EXAMPLE_X, ((1, 2, 3), (4, 5, 6), (7, 8, 9))),
                       K=(_EXAMPLE_K, ((1, 2), (3, 4)))):
    """Draw a two-channel cross-correlation: one result per channel, then their sum.

    Explained in chapters/conv-layer.md.
    """
    X, K = np.asarray(X, dtype=np.float32), np.asarray(K, dtype=np.float32)
    parts = [corr2d(nd.array(x), nd.array(k)).asnumpy() for x, k in zip(X, K)]
    total = corr2d_multi_in(nd.array(X), nd.array(K)).asnumpy()
    (c, n_h, n_w), (k_h, k_w), (o_h, o_w) = X.shape, K.shape[1:], total.shape
    row = n_h + 1.5
    width = 1 + n_w + 1.5 + k_w + 1.5 + o_w + 2 + o_w + 1
    height = 1.5 + c * row + 0.8 * c + 0.8
    fig, ax = _canvas(max(width, 14), height)
    x_k = 1 + n_w + 1.5
    x_p = x_k + k_w + 1.5
    lines = []
    for ch in range(c):
        top = 1.5 + ch * row
        mid = top + n_h / 2
        _grid(ax, X[ch], 1, top, title=f'input channel {ch}')
        _outline(ax, 1, top, k_w, k_h, _WINDOWS[ch])
        ax.text(1 + n_w + 0.75, mid, '⋆', ha='center', va='center', fontsize=30)
        _grid(ax, K[ch], x_k, mid - k_h / 2, title=f'kernel {ch}')
        ax.text(x_k + k_w + 0.75, mid, '=', ha='center', va='center', fontsize=16)
        fill = [[_PLAIN] * o_w for _ in range(o_h)]
        fill[0][0] = _WINDOWS[ch]
        _grid(ax, parts[ch], x_p, mid - o_h / 2, fill)
        lines.append(_products(X[ch, :k_h, :k_w], K[ch]))
    mid = 1.5 + (c * row - 1.5) / 2
    ax.text(x_p + o_w + 1, mid, '→ sum', ha='center', va='center', fontsize=12)
    fill = [[_PLAIN] * o_w for _ in range(o_h)]
    fill[0][0] = '#cccccc'
    _grid(ax, total, x_p + o_w + 2, mid - o_h / 2, fill, 'output')
    for n, text in enumerate(lines):
        ax.text(1, 1.5 + c * row + 0.8 * n, f'channel {n}: {text}', color=_WINDOWS[n],
                ha='left', va='center', fontsize=11)
    ax.text(1, 1.5 + c * row + 0.8 * c,
            'output: ' + ' + '.join(_fmt(p[0, 0]) for p in parts) + f' = {_fmt(total[0, 0])}',
            ha='left', va='center', fontsize=11)
    return fig


def draw_conv_multi_out(X=(_EXAMPLE_X, ((1, 2, 3), (4, 5, 6), (7, 8, 9))),
                        K=(_EXAMPLE_K, ((1, 2), (3, 4)))):
    """Draw c_o = 3 output channels from the kernels K, K + 1, K + 2 on a 2-channel input.

    Explained in chapters/conv-layer.md.
    """
    X = np.asarray(X, dtype=np.float32)
    K = np.asarray(K, dtype=np.float32)
    K3 = np.stack([K, K + 1, K + 2])                # (c_o, c_i, kh, kw)
    Y = corr2d_multi_in_out(nd.array(X), nd.array(K3)).asnumpy()  # (c_o, h', w')
    (c_o, c_i, k_h, k_w), (n_h, n_w), (o_h, o_w) = K3.shape, X.shape[1:], Y.shape[1:]
    row = max(k_h, o_h) + 1.3
    height = 1.5 + c_o * row + 0.6
    x_k = 1 + n_w + 2
    x_o = x_k + c_i * (k_w + 0.6) + 1.5
    width = x_o + o_w + 1
    fig, ax = _canvas(max(width, 12), height)
    for ch in range(c_i):
        _grid(ax, X[ch], 1, 1.5 + ch * (n_h + 1.2), title=f'input channel {ch}')
    for o in range(c_o):
        top = 1.5 + o * row
        for ch in range(c_i):
            _grid(ax, K3[o, ch], x_k + ch * (k_w + 0.6), top,
                  [[_PALETTE[o]] * k_w for _ in range(k_h)], f'K[{o}, {ch}]')
        ax.text(x_o - 0.75, top + k_h / 2, '→', ha='center', va='center', fontsize=14)
        _grid(ax, Y[o], x_o, top, [[_PALETTE[o]] * o_w for _ in range(o_h)],
              f'output channel {o}')
    ax.text(1 + n_w + 1, 1.5 + (c_o * row - 1.3) / 2, '⋆', ha='center', va='center',
            fontsize=18)
    ax.text(1, height - 0.2, f'kernel {c_o} x {c_i} x {k_h} x {k_w}: output channel o sums '
            f'corr2d(input channel c, K[o, c]) over c', ha='left', va='bottom', fontsize=11)
    return fig


def draw_receptive_field(height=320, width=480, cell=(5, 10), photo_origin=(60, 16)):
    """Draw how ResNet-18's receptive field and output stride grow, layer by layer.

    Top: field size and jump (output stride) after each convolution or pooling
    of resnet18_v2's features, from `conv_layers` and `receptive_field`.
    Bottom: one stage-4 element's field at each stage on a height x width crop
    of the sample photo, and the stage-4 elements' centres, `jump` pixels apart.
    Explained in chapters/conv-layer.md.
    """
    from mxnet.gluon.model_zoo import vision
    features = vision.resnet18_v2().features        # the architecture; no weights
    fields = receptive_field(conv_layers(features))
    stage_ends = [len(conv_layers(features[:i + 1])) for i in range(5, 9)]
    plt = _plt()
    fig, (left, right) = plt.subplots(2, 1, figsize=(9, 10.5),
                                      gridspec_kw=dict(height_ratios=[1, 1.45]))
    layer = np.arange(1, len(fields) + 1)
    left.plot(layer, [f[0] for f in fields], 'o-', color='#d95f02',
              label='receptive field (pixels one element sees)')
    left.step(layer, [f[1] for f in fields], where='post', color='#1b9e77', lw=2,
              label='jump = output stride (pixels between elements)')
    left.set_yscale('log', base=2)
    left.set_xlabel('convolution or pooling layer of ResNet-18 (v2)')
    left.set_ylabel('input pixels')
    left.set_xticks(layer)
    for stage, end in enumerate(stage_ends, 1):
        size, jump, _ = fields[end - 1]
        left.axvline(end + 0.5, color='#bbbbbb', lw=0.8)
        left.annotate(f'stage {stage}\n{size} px, stride {jump}', (end, size),
                      textcoords='offset points', xytext=(-8, 10), ha='right', fontsize=10)
    left.legend(loc='lower right', fontsize=10)
    left.set_ylim(1, 2 ** 11)
    # Bottom: the fields of stage 1..4 around one stage-4 element, on the photo.
    r0, c0 = photo_origin
    right.imshow(sample_photo()[r0:r0 + height, c0:c0 + width])  # pixel (r, c) at y=r, x=c
    size, jump, start = fields[-1]
    rows = start + jump * np.arange(conv_output_shape(height, 1, jump))
    cols = start + jump * np.arange(conv_output_shape(width, 1, jump))
    gy, gx = np.meshgrid(rows, cols, indexing='ij')
    right.plot(gx.ravel(), gy.ravel(), '.', color='white', ms=3)
    cy, cx = start + jump * cell[0], start + jump * cell[1]
    for stage, (end, color) in enumerate(zip(stage_ends, ['#ffff33', '#ff7f00', '#e41a1c',
                                                          '#984ea3']), 1):
        size = fields[end - 1][0]
        right.add_patch(_patches().Rectangle((cx - (size - 1) / 2 - 0.5, cy - (size - 1) / 2 - 0.5),
                                             size, size, fill=False, edgecolor=color, lw=2,
                                             label=f'stage {stage}: {size} x {size}'))
    right.add_patch(_patches().Rectangle((cx - jump / 2, cy - jump / 2), jump, jump,
                                         facecolor='white', edgecolor='black', lw=1, alpha=0.8,
                                         label=f'{jump} x {jump}: the stride between centres'))
    right.plot([cx], [cy], 'o', color='black', ms=4)
    pad = fields[-1][0] // 2 - min(height, width) // 2 + 20
    right.set_xlim(-pad, width + pad)
    right.set_ylim(height + pad, -pad)
    right.add_patch(_patches().Rectangle((-0.5, -0.5), width, height, fill=False,
                                         edgecolor='black', lw=1, ls='--'))
    right.set_title(f'one stage-4 element of a {height} x {width} input: its field at each '
                    f'stage;\nwhite dots: the centres of all stage-4 elements, {jump} pixels apart',
                    fontsize=11)
    right.legend(loc='upper center', bbox_to_anchor=(0.5, -0.04), ncol=3, fontsize=10)
    right.set_xticks([0, width])
    right.set_yticks([0, height])
    fig.tight_layout()
    return fig


def draw_trans_conv_as_conv(X=((1, 2), (3, 4)), K=((0, 1, 2), (3, 4, 5), (6, 7, 8)), strides=2,
                            padding=1, output_padding=1, highlight=((0, 0), (1, 1))):
    """Draw a transposed convolution as a stride-1 convolution of the stretched input.

    Zeros inserted between X's elements are drawn yellow, padding zeros grey;
    the kernel is K flipped. The defaults are the 2x2 -> 4x4 example of
    chapters/transposed-conv.md. Explained in chapters/transposed-conv.md.
    """
    X, K = nd.array(np.asarray(X, dtype=np.float32)), np.asarray(K, dtype=np.float32)
    args = (K.shape, strides, padding, output_padding)
    Z = stretch_input(X, *args).asnumpy()
    element = stretch_input(nd.ones(X.shape), *args).asnumpy() > 0
    # Stretching an all-ones input with stride 1 marks where X's elements spread.
    s_h, s_w = _pair(strides)
    core = stretch_input(nd.ones(((X.shape[0] - 1) * s_h + 1, (X.shape[1] - 1) * s_w + 1)),
                         K.shape, 1, padding, output_padding).asnumpy() > 0
    kinds = np.where(element, 0, np.where(core, 2, 1))
    return draw_conv(Z, K[::-1, ::-1], highlight=highlight, kinds=kinds,
                     input_title='input, zeros inserted and around', kernel_title='kernel, flipped',
                     caption=f'{X.shape[0]}x{X.shape[1]} input stretched to '
                             f'{Z.shape[0]}x{Z.shape[1]}, kernel flipped, stride 1 -> '
                             f'{Z.shape[0] - K.shape[0] + 1}x{Z.shape[1] - K.shape[1] + 1}'
                             ' output = the transposed convolution')
# ------------------------------------------------------------------------------
# Semantic segmentation and classifier chapters (issue 11, part B): the four tasks
# on one image. Explained in chapters/semantic-segmentation-and-dataset.md.

from .voc import IGNORE_LABEL, voc_palette  # noqa: E402  (imported here: keeps merges easy)

__all__ += ['object_regions', 'task_example', 'draw_segmentation_tasks']

# Distinct colours for instances, one per object (Tableau's palette).
_INSTANCE_COLORS = ['#e6194b', '#3cb44b', '#4363d8', '#f58231', '#911eb4', '#42d4f4',
                    '#f032e6', '#bfef45']


def object_regions(ids, min_pixels=50):
    """Return (class id, mask) of every connected region of an object class in `ids`.

    `ids` is an (H, W) label of class ids (void 255 separates regions); regions
    smaller than `min_pixels` are skipped. A region is one object only when
    objects of one class never touch. Explained in
    chapters/semantic-segmentation-and-dataset.md.
    """
    import cv2
    regions = []
    for c in np.unique(ids):
        if c in (0, IGNORE_LABEL):
            continue
        count, parts = cv2.connectedComponents((ids == c).astype(np.uint8))
        regions += [(int(c), parts == k) for k in range(1, count)
                    if (parts == k).sum() >= min_pixels]
    return regions


def task_example(voc_dir, is_train=True, max_images=50):
    """Return (image, ids) of the first example where one class has two separate objects.

    Falls back to the example with the most object regions. `ids` holds class
    ids with 255 on void. Explained in chapters/semantic-segmentation-and-dataset.md.
    """
    features, labels = read_voc_images(voc_dir, is_train, max_images=max_images)
    lookup = {tuple(rgb): i for i, rgb in enumerate(VOC_COLORMAP)}
    lookup[tuple(VOC_VOID_COLOR)] = IGNORE_LABEL
    best, most = None, -1
    for feature, label in zip(features, labels):
        rgb = label.asnumpy()
        ids = np.zeros(rgb.shape[:2], dtype=np.uint8)
        for colour, i in lookup.items():
            ids[(rgb == colour).all(axis=2)] = i
        classes = [c for c, _ in object_regions(ids)]
        if len(classes) > len(set(classes)):
            return feature.asnumpy(), ids
        if len(classes) > most:
            best, most = (feature.asnumpy(), ids), len(classes)
    return best


def draw_segmentation_tasks(image, ids, source):
    """Draw one image as four tasks see it: classes, boxes, class mask, object masks.

    `ids` is the image's label (class ids, 255 on void); boxes and instances
    are its connected regions (`object_regions`); `source` names the dataset
    in the title. Explained in chapters/semantic-segmentation-and-dataset.md.
    """
    from matplotlib.colors import to_rgb
    regions = object_regions(ids)
    names = [VOC_CLASSES[c] for c in sorted({c for c, _ in regions})]
    semantic = voc_palette()[ids]                           # (H, W, 3): void in cream
    instances = np.zeros_like(semantic)
    for k, (_, mask) in enumerate(regions):
        instances[mask] = np.array(to_rgb(_INSTANCE_COLORS[k % 8])) * 255
    height = 1.95 * ids.shape[0] / ids.shape[1] + 1.3    # inches: image, titles, legend
    fig, axes = _plt().subplots(1, 4, figsize=(8, height))   # 8 inches fit a book page
    fig.subplots_adjust(left=0.01, right=0.99, wspace=0.05, top=1 - 0.75 / height,
                        bottom=0.45 / height)
    panels = [(image, 'image classification', ', '.join(names)),
              (image, 'object detection', f'{len(regions)} boxes with a class each'),
              (semantic, 'semantic segmentation', 'a class for every pixel'),
              (instances, 'instance segmentation', 'a mask for every object')]
    for ax, (picture, task, answer) in zip(axes, panels):
        ax.imshow(picture)
        ax.set_title(f'{task}\n{answer}', fontsize=9)
        ax.axis('off')
    for c, mask in regions:  # a detector's answer: the extent of each object
        ys, xs = np.nonzero(mask)
        axes[1].add_patch(_patches().Rectangle(
            (xs.min() - 0.5, ys.min() - 0.5), xs.max() - xs.min() + 1,
            ys.max() - ys.min() + 1, fill=False, edgecolor='yellow', lw=2))
        axes[1].text(xs.min() + 1, ys.min() + 1, VOC_CLASSES[c], color='black', fontsize=7,
                     va='top', bbox=dict(facecolor='yellow', pad=1, lw=0))
    present = [0] + sorted({c for c, _ in regions})
    legend = [(VOC_CLASSES[c], VOC_COLORMAP[c]) for c in present]
    legend.append(('void (not a class)', VOC_VOID_COLOR))
    fig.legend(handles=[_patches().Patch(facecolor=np.array(rgb) / 255, edgecolor='#555555',
                                         label=name) for name, rgb in legend],
               loc='lower center', ncol=len(legend), fontsize=8, frameon=False,
               handlelength=1, columnspacing=1.2, title='semantic segmentation colours',
               title_fontsize=8)
    fig.suptitle(f'One image of the {source}, as four tasks see it', fontsize=10,
                 y=1 - 0.2 / height)
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
