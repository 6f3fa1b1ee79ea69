"""accelflow: optimize a trained model for the machine it will serve on, and prove it.

The public Python API is one call:

    import accelflow
    model = accelflow.load("results/my-task")   # a result folder written by `accelflow optimize`
    model = accelflow.load("s3://bucket/results/my-task")   # or its URI: downloaded once, checked, cached
    outputs = model(*inputs)                     # same input nesting and output kind as the original

A Stable Diffusion pipeline's result loads as a diffusers pipeline (load returns it too):

    pipe = accelflow.load_pipeline("results/my-sd-task")
    image = pipe("a red apple", num_inference_steps=20, height=256, width=256).images[0]
"""

from accelflow.core import VERSION as __version__  # noqa: F401  (the one place the version is set)


def load(folder: str, threads: int | None = None, trust_model_code: bool = False):
    """Load an optimized model folder or result URI; see engines.result.OptimizedModel.

    A result whose loading runs its original model's code (an MMDetection .py config, a
    diffusers custom component) is refused unless `trust_model_code` (docs/security.md).
    """
    from accelflow.engines.loading import load as _load
    from accelflow.tasks.publish import local_copy

    return _load(local_copy(folder), threads, trust_model_code)


def load_pipeline(folder: str, threads: int | None = None, trust_model_code: bool = False):
    """Load an optimized Stable Diffusion pipeline folder or result URI; see engines.pipeline_result."""
    from accelflow.engines.pipeline_result import load_pipeline as _load_pipeline
    from accelflow.tasks.publish import local_copy

    return _load_pipeline(local_copy(folder), threads, trust_model_code)
