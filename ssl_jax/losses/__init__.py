"""Self-supervised losses as pure functions of arrays, one module per family.

Every function here is jittable, takes global-batch arrays (under ``jax.jit`` with a sharded batch
the reductions are global, so negatives come from every device), and documents the formula of the
paper it implements. No parameters, no state. The families:

* ``common``: Pieces every loss family uses
* ``contrastive``: Contrastive losses over one InfoNCE core
* ``regression``: Non-contrastive regression of one view onto the other; I-JEPA in latent space
* ``redundancy``: Redundancy reduction and variance-covariance regularisation
* ``clustering``: Online clustering with balanced assignments
* ``distillation``: Self-distillation from an EMA teacher
* ``masked``: Masked image modelling
* ``pretext``: Pretext classification tasks
* ``hybrid``: Objectives that add two families
* ``jepa``: Joint-embedding predictive objectives (LeJEPA's SIGReg)
* ``msn``: Masked Siamese Networks' prototype loss (MSN / PMSN)
* ``speech``: wav2vec 2.0's contrastive and diversity terms, HuBERT's masked unit prediction

Every public name is re-exported here, so ``losses.nt_xent`` is the same function as
``losses.contrastive.nt_xent``.
"""
from __future__ import annotations

from ssl_jax.losses import common
from ssl_jax.losses import contrastive
from ssl_jax.losses import regression
from ssl_jax.losses import redundancy
from ssl_jax.losses import clustering
from ssl_jax.losses import distillation
from ssl_jax.losses import masked
from ssl_jax.losses import pretext
from ssl_jax.losses import hybrid
from ssl_jax.losses import jepa
from ssl_jax.losses import msn
from ssl_jax.losses import speech

from ssl_jax.losses.common import l2_normalize
from ssl_jax.losses.contrastive import (
    info_nce_terms, info_nce, nt_xent, instance_discrimination, memory_bank_update, CMC_GRAPHS,
    cmc_view_pairs, cmc_loss, cpc_infonce, info_nce_with_negatives, info_nce_queue,
    memory_bank_info_nce, in_batch_info_nce, moco_v3_contrastive, moco_v3_symmetric,
    nearest_neighbour, nnclr_contrastive, nnclr_symmetric)
from ssl_jax.losses.regression import normalized_mse, negative_cosine, ijepa_loss, IJEPA_LOSSES
from ssl_jax.losses.redundancy import barlow_twins, vicreg
from ssl_jax.losses.clustering import sinkhorn_knopp, swav
from ssl_jax.losses.distillation import (
    dino_loss, ema_center, ibot_patch_loss, instance_norm_tokens, data2vec_targets, data2vec_loss,
    softmax_entropy)
from ssl_jax.losses.distillation import (
    multicrop_cross_entropy, masked_patch_cross_entropy, sinkhorn_knopp_targets, koleo_loss,
    dinov2_loss, distribution_entropy)
from ssl_jax.losses.masked import (
    mae_loss, simmim_l1_loss, SIMMIM_LOSSES, simmim_loss, local_norm_targets, masked_cross_entropy,
    straight_through, vq_vae_loss)
from ssl_jax.losses.pretext import (
    pretext_cross_entropy, uncertainty_weighted_sum, colorization_rebalanced_ce)
from ssl_jax.losses.hybrid import cmae_loss
from ssl_jax.losses.jepa import (
    epps_pulley_grid, epps_pulley, random_directions, sigreg, lejepa_loss)
from ssl_jax.losses.msn import (
    prototype_probabilities, sharpen, power_law_prior, msn_regularizer, msn_loss)
from ssl_jax.losses.speech import (
    sample_negatives, wav2vec2_contrastive_logits, wav2vec2_contrastive_loss,
    wav2vec2_diversity_loss, feature_l2_penalty, hubert_logits, hubert_loss)
