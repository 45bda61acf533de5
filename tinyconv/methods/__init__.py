"""The paper's methods (Simonyan, Vedaldi & Zisserman 2014), one module a section.

- ``classviz``: §2, class model visualisation.
- ``saliency``: §3, image-specific class saliency (and SmoothGrad, beyond the paper).
- ``localisation``: §3.1, weakly supervised localisation with GraphCut.
- ``deconvnet``: §4, the relation to the DeconvNet.
"""
