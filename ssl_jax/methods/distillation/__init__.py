"""Self-distillation methods with an EMA teacher: DINO, iBOT, data2vec (vision)."""
