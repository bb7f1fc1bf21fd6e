"""Scale-out with Keras' distribution API (JAX, and PyTorch where Keras supports it).

- Data parallel: ``keras.distribution.set_distribution(keras.distribution.DataParallel())`` before
  building the model; every variable is replicated and each device takes a slice of the batch.
  Use it while the model fits on one device.
- Model parallel: ``get_layout_map(device_mesh)`` shards the encoder's dense kernels and the
  embedding tables over the mesh's ``model`` axis, Megatron style (the projections into a layer
  split their output columns, the projections out of it their input rows), so each device holds
  a slice of every large matrix:

      mesh = keras.distribution.DeviceMesh((2, 4), ["batch", "model"], keras.distribution.list_devices())
      keras.distribution.set_distribution(keras.distribution.ModelParallel(
          layout_map=get_layout_map(mesh), batch_dim_name="batch"))

  Use it when the model (or its optimizer state) does not fit on one device.

TensorFlow's own route is ``tf.distribute`` (MirroredStrategy), which Keras' distribution API does
not cover yet.
"""

from __future__ import annotations

import keras


def get_layout_map(device_mesh, config=None, model_dim: str = "model"):
    """A ``keras.distribution.LayoutMap`` for ConvBERT's variables on ``device_mesh``.

    Dense kernels are (in, out): the query / key / value, convolution and feed-forward-in
    projections split their columns (``(None, model_dim)``), the attention and feed-forward output
    projections their rows (``(model_dim, None)``); embedding tables split their feature axis.
    With ``config.num_groups > 1`` the feed-forward kernels are grouped, (G, in/G, out/G), and split
    the same way inside each group. Everything else (biases, LayerNorms, the small convolution
    kernels) is replicated.
    """
    grouped = config is not None and config.num_groups > 1
    layout_map = keras.distribution.LayoutMap(device_mesh)
    layout_map[r".*embeddings/embeddings"] = (None, model_dim)
    layout_map[r".*self/(query|key|value|conv_out_layer)/kernel"] = (None, model_dim)
    layout_map[r".*attention_output/dense/kernel"] = (model_dim, None)
    layout_map[r".*intermediate/dense/kernel"] = (None, None, model_dim) if grouped else (None, model_dim)
    layout_map[r".*layer_output/dense/kernel"] = (None, model_dim, None) if grouped else (model_dim, None)
    return layout_map
