"""Draw the segmentation dataset: VOC's colours, its examples, one image as four tasks see it.

Explained in chapters/semantic-segmentation-and-dataset.md.
"""
import numpy as np

from ..voc import (IGNORE_LABEL, VOC_CLASSES, VOC_COLORMAP, VOC_VOID_COLOR, read_voc_images,
                   voc_palette)
from ..voc import voc_examples
from .canvas import patches, pyplot

__all__ = ['draw_voc_legend', 'draw_voc_samples', 'object_regions', 'task_example',
           'draw_segmentation_tasks']


def draw_voc_legend():
    """Draw VOC's 21 class colours with ids and names, plus the void colour.

    Explained in chapters/semantic-segmentation-and-dataset.md.
    """
    entries = [(i, name, VOC_COLORMAP[i]) for i, name in enumerate(VOC_CLASSES)]
    entries.append((255, 'void', VOC_VOID_COLOR))  # the band around objects
    cols = 3
    rows = -(-len(entries) // cols)
    fig, ax = pyplot().subplots(figsize=(11, 0.42 * rows + 0.3))
    ax.set_xlim(0, cols)
    ax.set_ylim(rows, 0)
    ax.axis('off')
    for n, (index, name, rgb) in enumerate(entries):
        c, r = divmod(n, rows)
        ax.add_patch(patches().Rectangle((c + 0.02, r + 0.12), 0.12, 0.76,
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
    fig, axes = pyplot().subplots(3, len(features), figsize=(2.2 * len(features), 5.6),
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
    best, most = None, -1
    for image, ids in voc_examples(voc_dir, is_train, max_images):
        classes = [c for c, _ in object_regions(ids)]
        if len(classes) > len(set(classes)):
            return image, ids
        if len(classes) > most:
            best, most = (image, ids), len(classes)
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
    fig, axes = pyplot().subplots(1, 4, figsize=(8, height))   # 8 inches fit a book page
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
        axes[1].add_patch(patches().Rectangle(
            (xs.min() - 0.5, ys.min() - 0.5), xs.max() - xs.min() + 1,
            ys.max() - ys.min() + 1, fill=False, edgecolor='yellow', lw=2))
        axes[1].text(xs.min() + 1, ys.min() + 1, VOC_CLASSES[c], color='black', fontsize=7,
                     va='top', bbox=dict(facecolor='yellow', pad=1, lw=0))
    present = [0] + sorted({c for c, _ in regions})
    legend = [(VOC_CLASSES[c], VOC_COLORMAP[c]) for c in present]
    legend.append(('void (not a class)', VOC_VOID_COLOR))
    fig.legend(handles=[patches().Patch(facecolor=np.array(rgb) / 255, edgecolor='#555555',
                                         label=name) for name, rgb in legend],
               loc='lower center', ncol=len(legend), fontsize=8, frameon=False,
               handlelength=1, columnspacing=1.2, title='semantic segmentation colours',
               title_fontsize=8)
    fig.suptitle(f'One image of the {source}, as four tasks see it', fontsize=10,
                 y=1 - 0.2 / height)
    return fig
