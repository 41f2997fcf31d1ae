"""Kubeflow pipeline steps (imported as `distilqa.components`): thin typed functions over the library.

The steps arrive with the pipeline issue; the library they call (data, windows, decoding, metric)
is in `distilqa` proper.
"""
