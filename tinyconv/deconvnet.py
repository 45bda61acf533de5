"""The DeconvNet of Zeiler & Fergus and its relation to backprop (§4), for
``tinyconv.deconvnet.reconstruct``; the code is in ``tinyconv.methods.deconvnet``."""

from .methods.deconvnet import compare, deconvolve, reconstruct, resolve_layer, walk_back

__all__ = ["compare", "deconvolve", "reconstruct", "resolve_layer", "walk_back"]
