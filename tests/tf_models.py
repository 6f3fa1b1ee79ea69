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


# ---------------------------------------------------------------- hostile models (issue 17)
# Each serves `x` float32 (batch, 4) -> `y`; what else its graph does is the point.


def _serving_module(tf, body):
    """A tf.Module whose serving signature returns {"y": body(x)}."""

    class Served(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
        def serve(self, x):
            return {"y": body(x)}

    return Served()


def _save_module(tf, module, folder: str) -> str:
    tf.saved_model.save(module, folder, signatures={"serving_default": module.serve})
    return folder


def writing_savedmodel(folder: str, target: str) -> str:
    """A SavedModel whose serving function writes the file `target` (tf.io.write_file)."""
    tf = _tf()

    def body(x):
        tf.io.write_file(target, tf.strings.as_string(tf.reduce_sum(x)))
        return x * 2.0

    return _save_module(tf, _serving_module(tf, body), folder)


def environ_copying_savedmodel(folder: str, target: str) -> str:
    """A SavedModel whose serving function copies its process's environment as it was started
    (/proc/self/environ) into the file `target`, and its /proc/self/stat (the pid first) into
    `target`.stat: which process ran the model and what it was given, seen from inside it."""
    tf = _tf()

    def body(x):
        tf.io.write_file(target, tf.io.read_file("/proc/self/environ"))
        tf.io.write_file(target + ".stat", tf.io.read_file("/proc/self/stat"))
        return x * 2.0

    return _save_module(tf, _serving_module(tf, body), folder)


def reading_savedmodel(folder: str, source: str) -> str:
    """A SavedModel whose serving function reads the file `source` into its output (tf.io.read_file)."""
    tf = _tf()

    def body(x):
        return x + tf.cast(tf.strings.length(tf.io.read_file(source)), tf.float32)

    return _save_module(tf, _serving_module(tf, body), folder)


def disguised_saver_savedmodel(folder: str, target: str) -> str:
    """A SavedModel whose serving function calls a function of its own named like the saver's
    (`__inference__traced_save_N`), which writes a checkpoint at `target` with SaveV2."""
    tf = _tf()

    @tf.function
    def _traced_save(x):
        tf.raw_ops.SaveV2(prefix=target, tensor_names=["x"], shape_and_slices=[""], tensors=[x])
        return x

    return _save_module(tf, _serving_module(tf, lambda x: _traced_save(x) * 2.0), folder)


def tf1_savedmodel(folder: str) -> str:
    """A TF1-style SavedModel (SavedModelBuilder): its saver's SaveV2/RestoreV2 are graph nodes."""
    tf = _tf()
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 4], name="x")
        w = tf.Variable(np.ones((4, 2), np.float32), name="w")
        y = tf.matmul(x, w, name="y")
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            builder = tf.compat.v1.saved_model.Builder(folder)
            signature = tf.compat.v1.saved_model.predict_signature_def({"x": x}, {"y": y})
            builder.add_meta_graph_and_variables(sess, ["serve"], signature_def_map={"serving_default": signature})
            builder.save()
    return folder


def reading_frozen_graph(path: str, source: str) -> str:
    """A frozen graph (placeholder `x`, sink `y`) whose node `read_secret` reads the file `source`."""
    tf = _tf()
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 4], name="x")
        contents = tf.io.read_file(source, name="read_secret")
        tf.add(x, tf.cast(tf.strings.length(contents), tf.float32), name="y")
    tf.io.write_graph(graph.as_graph_def(), os.path.dirname(path), os.path.basename(path), as_text=False)
    return path


def edit_saved_model(folder: str, edit) -> str:
    """Rewrite saved_model.pb with `edit(meta_graph)` applied to its meta graph: a model as an
    attacker would write it by hand, which the TF API would not produce."""
    from tensorflow.core.protobuf import saved_model_pb2

    path = os.path.join(folder, "saved_model.pb")
    saved = saved_model_pb2.SavedModel()
    with open(path, "rb") as f:
        saved.ParseFromString(f.read())
    edit(saved.meta_graphs[0])
    with open(path, "wb") as f:
        f.write(saved.SerializeToString())
    return folder
