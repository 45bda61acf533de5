"""Weakly supervised localisation (§3.1): saliency -> colour models -> GraphCut -> box.

- ``pipeline``: ``localize`` and its steps (seeds, graph cut, largest component, box).
- ``gmm``: the Gaussian mixture colour models.
- ``boxes``: IoU, CorLoc and the VOC / ILSVRC annotation reader.
- ``photos``: the pipeline on user images of any size (boxes in their own pixels).
- ``benchmark``: the scene benchmark's protocol (``tinyconv localize --benchmark``).
"""

from .boxes import corloc, iou
from .gmm import GaussianMixture
from .pipeline import contrast_weights, graph_cut, largest_component, localize, mask_box, seeds

__all__ = [
    "GaussianMixture", "contrast_weights", "corloc", "graph_cut", "iou", "largest_component", "localize",
    "mask_box", "seeds",
]
