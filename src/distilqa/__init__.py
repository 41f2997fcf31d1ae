"""distilqa: distil big extractive-QA models into small, fast, evaluated ones and serve them.

The package root imports nothing heavy: `distilqa eval` must start without torch, transformers,
kfp or mlflow, so every module that needs them imports them inside the functions that use them.
"""

__version__ = "0.1.0"
