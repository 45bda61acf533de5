"""Pictures: turning arrays into images people look at.

- ``imaging``: reading images, preprocessing, heat maps, overlays, montages.
- ``demo``: the figures of the commands and the demo's index page.
"""
