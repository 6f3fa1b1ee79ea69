"""Build TensorFlow example models locally, with random weights and no download (needs `.[tf]`).

    python examples/make_tf_models.py mobilenet [--out examples/models] [--size 224]

writes the same Keras MobileNetV2 twice: as a SavedModel folder (`mobilenet_savedmodel/`) and
as a frozen graph (`mobilenet_frozen.pb`), and prints the tensor information for each.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def mobilenet(size: int) -> keras.Model:
    """MobileNetV2 with random weights, logits out, and batch-norm statistics as after training."""
    keras.utils.set_random_seed(0)
    image = keras.Input((size, size, 3), name="image")  # the signature's input key
    model = keras.applications.MobileNetV2(
        input_tensor=image, weights=None, classifier_activation=None, name="mobilenet_v2",
    )
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(rng.uniform(-0.1, 0.1, layer.moving_mean.shape).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, layer.moving_variance.shape).astype("float32"))
    return model


def save_savedmodel(model: keras.Model, folder: str) -> str:
    """A SavedModel with the `serving_default` signature, as Keras' own export writes it."""
    model.export(folder, verbose=False)
    return folder


def save_frozen_graph(model: keras.Model, path: str, input_name: str = "image") -> str:
    """The model's inference function with its variables folded into constants, as a GraphDef."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    spec = tf.TensorSpec([None, *model.input_shape[1:]], tf.float32, name=input_name)
    concrete = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    frozen = convert_variables_to_constants_v2(concrete)
    tf.io.write_graph(frozen.graph.as_graph_def(), os.path.dirname(path), os.path.basename(path), as_text=False)
    return path


def signature_input_name(folder: str) -> str:
    signature = tf.saved_model.load(folder).signatures["serving_default"]
    return next(iter(signature.structured_input_signature[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", choices=["mobilenet"])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "models"))
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    model = mobilenet(args.size)
    folder = save_savedmodel(model, os.path.join(args.out, "mobilenet_savedmodel"))
    graph = save_frozen_graph(model, os.path.join(args.out, "mobilenet_frozen.pb"))
    shape = f"{args.size}*{args.size}*3"
    print(f"SavedModel:   {folder}")
    print(f"  tensor information: {signature_input_name(folder)}:float(1*{shape},4*{shape})")
    print(f"frozen graph: {graph}")
    print(f"  tensor information: image:float(1*{shape})")


if __name__ == "__main__":
    main()
