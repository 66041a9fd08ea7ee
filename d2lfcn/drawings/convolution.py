"""Draw cross-correlations: windows, padding, stride, channels, the receptive field.

The numbers drawn come from the library (`corr2d`, `conv_output_shape`,
`receptive_field`, ...), so a figure cannot drift from the code it shows.
Explained in chapters/conv-layer.md.
"""
import numpy as np
from mxnet import nd

from ..conv import (conv_layers, conv_output_shape, corr2d, corr2d_multi_in,
                    corr2d_multi_in_out, receptive_field)
from .canvas import (PALETTE, PLAIN, canvas, fmt, grid, pair, patches, pyplot,
                     sample_photo)

__all__ = ['draw_conv', 'draw_conv_multi_in', 'draw_conv_multi_out', 'draw_receptive_field']


_EXAMPLE_X = ((0, 1, 2), (3, 4, 5), (6, 7, 8))  # D2L's 3x3 input
_EXAMPLE_K = ((0, 1), (2, 3))                     # D2L's 2x2 kernel
_WINDOWS = ['#ff7f00', '#1f78b4', '#33a02c']      # outline of each highlighted window
_ZERO_FILL = {1: '#d9d9d9', 2: '#fff2cc'}        # padding zeros, inserted zeros


def _outline(ax, x, y, w, h, color):
    ax.add_patch(patches().Rectangle((x, y), w, h, fill=False, edgecolor=color,
                                      linewidth=3.5, zorder=5))


def _products(window, kernel):
    """Return 'a×b + c×d + ... = s' for one window and the kernel, row by row."""
    terms = ' + '.join(f'{fmt(a)}×{fmt(b)}' for a, b in zip(window.ravel(), kernel.ravel()))
    return f'{terms} = {fmt((window * kernel).sum())}'


def draw_conv(X=_EXAMPLE_X, K=_EXAMPLE_K, padding=0, strides=1, highlight=((0, 0),),
              kinds=None, input_title=None, kernel_title='kernel', caption=None):
    """Draw a cross-correlation: the padded input, the kernel, the output, chosen windows.

    `padding` and `strides` are Gluon's (per side; int or (h, w)); the output
    is `corr2d` of the padded input, taken every `strides` rows and columns.
    `kinds` marks cells of X drawn as zeros (1 padding, 2 inserted; see
    `stretch_input`). Explained in chapters/conv-layer.md.
    """
    X, K = np.asarray(X, dtype=np.float32), np.asarray(K, dtype=np.float32)
    (ph, pw), (sh, sw) = pair(padding), pair(strides)
    P = np.pad(X, ((ph, ph), (pw, pw)))
    kind = np.pad(np.zeros(X.shape, int) if kinds is None else np.asarray(kinds),
                  ((ph, ph), (pw, pw)), constant_values=1)
    out = corr2d(nd.array(P), nd.array(K)).asnumpy()[::sh, ::sw]
    assert out.shape == conv_output_shape(X.shape, K.shape, (sh, sw), (ph, pw))
    (n_h, n_w), (k_h, k_w), (o_h, o_w) = P.shape, K.shape, out.shape
    width = 1 + n_w + 1.5 + k_w + 1.5 + o_w + 1
    height = 1.5 + max(n_h, 3) + 0.5 + 0.8 * len(highlight) + 1.2
    fig, ax = canvas(max(width, 14), height)
    top, mid = 1.5, 1.5 + n_h / 2
    fills = [[_ZERO_FILL.get(k, PLAIN) for k in row] for row in kind]
    title = input_title or ('input' + (f', padding {padding}' if padding else ''))
    grid(ax, P, 1, top, fills, title)
    ax.text(1 + n_w + 0.75, mid, '⋆', ha='center', va='center', fontsize=30)
    x_k = 1 + n_w + 1.5
    grid(ax, K, x_k, mid - k_h / 2, title=kernel_title)
    ax.text(x_k + k_w + 0.75, mid, '=', ha='center', va='center', fontsize=16)
    x_o = x_k + k_w + 1.5
    out_fill = [[PLAIN] * o_w for _ in range(o_h)]
    for n, (i, j) in enumerate(highlight):
        out_fill[i][j] = _WINDOWS[n]
    grid(ax, out, x_o, mid - o_h / 2, out_fill,
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
    fig, ax = canvas(max(width, 14), height)
    x_k = 1 + n_w + 1.5
    x_p = x_k + k_w + 1.5
    lines = []
    for ch in range(c):
        top = 1.5 + ch * row
        mid = top + n_h / 2
        grid(ax, X[ch], 1, top, title=f'input channel {ch}')
        _outline(ax, 1, top, k_w, k_h, _WINDOWS[ch])
        ax.text(1 + n_w + 0.75, mid, '⋆', ha='center', va='center', fontsize=30)
        grid(ax, K[ch], x_k, mid - k_h / 2, title=f'kernel {ch}')
        ax.text(x_k + k_w + 0.75, mid, '=', ha='center', va='center', fontsize=16)
        fill = [[PLAIN] * o_w for _ in range(o_h)]
        fill[0][0] = _WINDOWS[ch]
        grid(ax, parts[ch], x_p, mid - o_h / 2, fill)
        lines.append(_products(X[ch, :k_h, :k_w], K[ch]))
    mid = 1.5 + (c * row - 1.5) / 2
    ax.text(x_p + o_w + 1, mid, '→ sum', ha='center', va='center', fontsize=12)
    fill = [[PLAIN] * o_w for _ in range(o_h)]
    fill[0][0] = '#cccccc'
    grid(ax, total, x_p + o_w + 2, mid - o_h / 2, fill, 'output')
    for n, text in enumerate(lines):
        ax.text(1, 1.5 + c * row + 0.8 * n, f'channel {n}: {text}', color=_WINDOWS[n],
                ha='left', va='center', fontsize=11)
    ax.text(1, 1.5 + c * row + 0.8 * c,
            'output: ' + ' + '.join(fmt(p[0, 0]) for p in parts) + f' = {fmt(total[0, 0])}',
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
    fig, ax = canvas(max(width, 12), height)
    for ch in range(c_i):
        grid(ax, X[ch], 1, 1.5 + ch * (n_h + 1.2), title=f'input channel {ch}')
    for o in range(c_o):
        top = 1.5 + o * row
        for ch in range(c_i):
            grid(ax, K3[o, ch], x_k + ch * (k_w + 0.6), top,
                  [[PALETTE[o]] * k_w for _ in range(k_h)], f'K[{o}, {ch}]')
        ax.text(x_o - 0.75, top + k_h / 2, '→', ha='center', va='center', fontsize=14)
        grid(ax, Y[o], x_o, top, [[PALETTE[o]] * o_w for _ in range(o_h)],
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
    plt = pyplot()
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
        right.add_patch(patches().Rectangle((cx - (size - 1) / 2 - 0.5, cy - (size - 1) / 2 - 0.5),
                                             size, size, fill=False, edgecolor=color, lw=2,
                                             label=f'stage {stage}: {size} x {size}'))
    right.add_patch(patches().Rectangle((cx - jump / 2, cy - jump / 2), jump, jump,
                                         facecolor='white', edgecolor='black', lw=1, alpha=0.8,
                                         label=f'{jump} x {jump}: the stride between centres'))
    right.plot([cx], [cy], 'o', color='black', ms=4)
    pad = fields[-1][0] // 2 - min(height, width) // 2 + 20
    right.set_xlim(-pad, width + pad)
    right.set_ylim(height + pad, -pad)
    right.add_patch(patches().Rectangle((-0.5, -0.5), width, height, fill=False,
                                         edgecolor='black', lw=1, ls='--'))
    right.set_title(f'one stage-4 element of a {height} x {width} input: its field at each '
                    f'stage;\nwhite dots: the centres of all stage-4 elements, {jump} pixels apart',
                    fontsize=11)
    right.legend(loc='upper center', bbox_to_anchor=(0.5, -0.04), ncol=3, fontsize=10)
    right.set_xticks([0, width])
    right.set_yticks([0, height])
    fig.tight_layout()
    return fig
