"""Draw the FCN's layout: D2L's FCN, and FCN-32s, FCN-16s and FCN-8s side by side.

The shapes printed are computed with conv.py's shape formulas, the
arithmetic `get_fcn` builds. Explained in chapters/fcn.md.
"""
import numpy as np

from ..conv import conv_output_shape, transposed_conv_output_shape
from .canvas import patches, pyplot

__all__ = ['draw_fcn_architecture', 'draw_fcn_variants']


def _box3d(ax, x, y, w, h, d, color, label=None, below=None):
    """Draw a feature map as a slab: front w x h at (x, y) and depth d receding up-right."""
    dx, dy = 0.6 * d, 0.45 * d
    face = patches().Rectangle((x, y), w, h, facecolor=color, edgecolor='#333333')
    top = patches().Polygon([(x, y + h), (x + dx, y + h + dy), (x + w + dx, y + h + dy),
                            (x + w, y + h)], facecolor=color, edgecolor='#333333',
                           alpha=0.75)
    side = patches().Polygon([(x + w, y), (x + w + dx, y + dy), (x + w + dx, y + h + dy),
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
    fig, ax = pyplot().subplots(figsize=(14, 4.4))
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
    ax.add_patch(patches().FancyBboxPatch((x - 0.45, -level - 0.36), 0.9, 0.72,
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
    fig, axes = pyplot().subplots(3, 1, figsize=(8.8, 8.4))
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
