"""The engine: arrays in, scores out, gradients back.

- ``backend``: the one module that knows which array library runs (NumPy or CuPy).
- ``functional``: each layer's forward and backward as a pair of plain
  functions, the chain rule written out; the convolution in its readable
  im2col / GEMM / col2im form.
- ``fastconv``: the convolution that runs by default, tiled to the cache,
  proven equal to the readable pair by the tests.
- ``layers``: the layer classes, holding parameters, gradients and caches.
- ``network``: ``Sequential``, forward and backward through a chain of layers.
- ``train``: the loss, SGD and the training loop.

Nothing here knows what it is used for (saliency, class models, ...).
"""
