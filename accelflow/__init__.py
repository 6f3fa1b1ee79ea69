"""accelflow: optimize a trained model for the machine it will serve on, and prove it.

The public Python API is one call:

    import accelflow
    model = accelflow.load("results/my-task")   # a result folder written by `accelflow optimize`
    outputs = model(*inputs)                     # same input nesting and output kind as the original
"""

__version__ = "0.1.0"


def load(folder: str, threads: int | None = None):
    """Load an optimized model folder; see engines.result.OptimizedModel."""
    from engines.result import load as _load

    return _load(folder, threads)
