"""Pretext-task methods: rotation prediction (RotNet), jigsaw puzzles, PIRL, colorization and
CutPaste. Each file holds one method; the image transforms they need (rotations, tile
permutations, cut-and-paste) are pure jnp functions with explicit keys, run on device inside
``views()``."""
