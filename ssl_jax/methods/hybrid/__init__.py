"""Hybrid methods that combine several self-supervised signals in one model: SiT (reconstruction +
rotation + contrastive tokens) and CMAE (masked reconstruction + momentum contrastive)."""
