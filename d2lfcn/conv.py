"""Compute cross-correlation, convolution and transposed convolution from scratch.

Explained in chapters/conv-layer.md and chapters/transposed-conv.md.
"""
__all__ = []
