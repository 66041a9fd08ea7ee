"""Segment images with an exported ONNX FCN on onnxruntime: no MXNet needed.

A deployment machine installs numpy, Pillow, OpenCV and onnxruntime
(`pip install 'd2lfcn[onnx]'` without `cpu`); importing this module loads
no MXNet. `OnnxFCN.predict` gives the class map `inference.predict_image`
gives (mode 'pad') for the same weights. Explained in chapters/training-at-scale.md.
"""
import json
import os

import numpy as np

from .segmaps import normalize_array, pad_to_stride, voc_palette
from .utils import Arg, UserError, first_line

__all__ = ['OnnxFCN']


class OnnxFCN:
    """An FCN exported by `deploy.export_fcn` (with_onnx), run by onnxruntime.

    `class_names` and `palette` come from the file's metadata.
    Explained in chapters/training-at-scale.md.
    """

    def __init__(self, path, threads=None):
        try:
            import onnxruntime
        except ImportError:
            raise UserError("{onnx} needs onnxruntime: pip install 'd2lfcn[onnx]'",
                            onnx=Arg('onnx')) from None
        if not os.path.isfile(path):
            what = 'is a folder' if os.path.isdir(path) else 'does not exist'
            raise UserError(f'ONNX file {path} {what}; pass {{onnx}} with the .onnx file '
                            'written by python -m d2lfcn.export --format onnx',
                            onnx=Arg('onnx')) from None
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: a warning is no user's business
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = onnxruntime.InferenceSession(
                path, sess_options=options, providers=['CPUExecutionProvider'])
        except Exception as e:  # onnxruntime raises its own types for a bad file
            raise UserError(f'ONNX file {path} is damaged or not a model '
                            f'({first_line(e)})') from None
        meta = self.session.get_modelmeta().custom_metadata_map
        outputs = self.session.get_outputs()[0].shape
        num_classes = outputs[1] if isinstance(outputs[1], int) else None
        self.class_names = json.loads(meta['class_names']) if 'class_names' in meta else [
            f'class {i}' for i in range(num_classes or 0)]
        self.palette = json.loads(meta['palette']) if 'palette' in meta \
            else voc_palette()[:len(self.class_names)].tolist()
        self.arch = meta.get('arch', 'unknown')
        self._input = self.session.get_inputs()[0].name

    def scores(self, x):
        """Return the (C, H, W) scores of a normalised (H, W, 3) float32 array, H, W multiples of 32."""
        batch = np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)
        return self.session.run(None, {self._input: batch})[0][0]  # (C, H, W)

    def predict(self, img):
        """Return the (H, W) int32 class map of an (H, W, 3) RGB uint8 image of any size.

        The image is reflect-padded at the bottom and right to multiples of
        32, scored once, and cropped back, as `predict_image` does.
        """
        height, width = img.shape[:2]
        scores = self.scores(pad_to_stride(normalize_array(img)))  # (C, H', W')
        return scores[:, :height, :width].argmax(axis=0).astype(np.int32)  # (H, W)
