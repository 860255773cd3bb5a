"""CPU kernels: the forms of a few layers that XLA:CPU runs fast, kept apart from the flax modules.

Each is a drop-in for a standard op, same parameters and same results (to float32 rounding, tested)
on every backend; the model files pick them explicitly:

* ``conv.conv_general_dilated``: ``lax.conv_general_dilated`` or, by ``impl``
  (``model.conv_impl``), an im2col matmul (``im2col.conv``) or Winograd F(2x2, 3x3)
  (``winograd.conv3x3``); ResNet, the data2vec 2.0 decoder.
* ``dense.Dense``: ``nn.Dense`` on its input flattened to 2-D; ViT, Swin, heads, decoders.
* ``gelu.gelu``: the exact (erf) GELU with its derivative written out; ViT, heads, decoders.

Why each exists and what it measured: docs/performance.md.
"""
