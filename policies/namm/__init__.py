"""Neural Attention Memory Models (Cetin et al., 2024): features → scorer → threshold selection.

``features`` (attention spectrogram EMA + oldness embedding), ``scorers`` (BAM, MLP on one flat
parameter vector), ``checkpoint`` (safetensors + JSON sidecar), ``policy`` (the eviction policy).
"""

from dataclasses import dataclass

from policies import register_policy
from policies.namm.policy import NAMMPolicy


@register_policy("namm_bam")
@dataclass
class NAMMBam(NAMMPolicy):
    """NAMM with the backward-attention scorer (BAM, 4,172 parameters): evict tokens scoring < threshold."""

    architecture = "bam"


@register_policy("namm_mlp")
@dataclass
class NAMMMlp(NAMMPolicy):
    """NAMM with the per-token MLP scorer (Table 9): evict tokens scoring < threshold."""

    architecture = "mlp"
