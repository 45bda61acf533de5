"""Pictures: turning arrays into images people look at.

- ``imaging``: reading images, preprocessing (and its resize-and-crop geometry), heat maps, overlays,
  montages, file names and all-or-nothing writes.
- ``figures``: the figures of ``saliency``, ``classviz``, ``deconv`` and ``localize``.
- ``page``: an HTML page as a list of sections, each a title, a text and rows of pictures.
- ``demo``: the demo: the bundled networks run and written as one page.
"""
