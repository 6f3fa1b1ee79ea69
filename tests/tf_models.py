"""Small TensorFlow models built in the test session (random weights, no download)."""

from __future__ import annotations

import os

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _tf():
    import tensorflow as tf

    return tf


def keras_cnn_savedmodel(folder: str) -> str:
    """A Keras CNN (input key `image`, NHWC 16x16x3) exported as a SavedModel."""
    import keras

    keras.utils.set_random_seed(0)
    image = keras.Input((16, 16, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(image)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    logits = keras.layers.Dense(5, name="logits")(x)
    keras.Model(image, logits).export(folder, verbose=False)
    return folder


def keras_two_input_savedmodel(folder: str) -> str:
    """Named inputs of two dtypes: `tokens` int32 (batch, 6) and `features` float32 (batch, 4)."""
    import keras

    keras.utils.set_random_seed(1)
    tokens = keras.Input((6,), dtype="int32", name="tokens")
    features = keras.Input((4,), name="features")
    embedded = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(50, 8)(tokens))
    joined = keras.layers.Concatenate()([embedded, keras.layers.Dense(8, activation="relu")(features)])
    score = keras.layers.Dense(3, name="score")(joined)
    keras.Model({"tokens": tokens, "features": features}, score).export(folder, verbose=False)
    return folder


def frozen_graph(path: str) -> str:
    """A frozen graph made from a function of placeholders `x` (batch, 8) and `y` (batch, 3):
    two sinks `out_sum` and `out_prod`, and an inner node `hidden`."""
    tf = _tf()
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    rng = np.random.default_rng(2)
    w = tf.Variable(rng.standard_normal((8, 3)).astype(np.float32))

    @tf.function
    def model(x, y):
        hidden = tf.identity(tf.nn.relu(tf.matmul(x, w)), name="hidden")
        return tf.identity(hidden + y, name="out_sum"), tf.identity(hidden * y, name="out_prod")

    concrete = model.get_concrete_function(tf.TensorSpec([None, 8], tf.float32, name="x"),
                                           tf.TensorSpec([None, 3], tf.float32, name="y"))
    graph_def = convert_variables_to_constants_v2(concrete).graph.as_graph_def()
    tf.io.write_graph(graph_def, os.path.dirname(path), os.path.basename(path), as_text=False)
    return path
