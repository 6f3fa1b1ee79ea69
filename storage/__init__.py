"""Storage services: fsspec locations, the model repository, the conversion cache, retries."""
