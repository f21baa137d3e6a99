"""Attention masks and head masks for the X-MOD backbone: 0/1 inputs -> additive float masks."""

from __future__ import annotations

import torch

from .configuration import XmodConfig


def self_attention_mask(
    config: XmodConfig,
    attention_mask: torch.Tensor | None,
    batch: int,
    length: int,
    past_length: int,
    device: torch.device,
    dtype: torch.dtype,
) -> torch.Tensor | None:
    """The additive (B|1, 1, T, S) mask: padding from ``attention_mask``, plus causal when is_decoder."""
    total = past_length + length
    allowed = None
    if attention_mask is not None:
        if attention_mask.dim() == 2 and attention_mask.shape != (batch, total):
            raise ValueError(
                f"attention_mask must have shape (batch, past + tokens) = ({batch}, {total}), "
                f"got {tuple(attention_mask.shape)}"
            )
        allowed = expand_mask(attention_mask.to(device), batch)  # (B, 1, 1|T, S) bool
    if config.is_decoder:
        rows = torch.arange(past_length, total, device=device).view(-1, 1)
        causal = torch.arange(total, device=device).view(1, -1) <= rows  # (T, S)
        allowed = causal.view(1, 1, length, total) if allowed is None else allowed & causal
    return None if allowed is None else additive_mask(allowed, dtype)


def head_mask_per_layer(config: XmodConfig, head_mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """(H,) or (L, H) 0/1 head mask -> (L, 1, H, 1, 1), one (1, H, 1, 1) factor per layer."""
    if head_mask is None:
        return None
    if config.pruned_heads:
        raise ValueError(
            f"head_mask cannot be combined with pruned heads (config.pruned_heads={config.pruned_heads}); "
            "prune the heads you want masked instead"
        )
    layers, heads = config.num_hidden_layers, config.num_attention_heads
    if head_mask.shape == (heads,):
        head_mask = head_mask.expand(layers, heads)
    if head_mask.shape != (layers, heads):
        raise ValueError(
            f"head_mask must have shape (num_heads,) = ({heads},) or (num_layers, num_heads) = "
            f"({layers}, {heads}), got {tuple(head_mask.shape)}"
        )
    return head_mask.to(dtype).view(layers, 1, heads, 1, 1)


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype attention scores will have (the autocast dtype when autocast is on)."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


def expand_mask(mask: torch.Tensor, batch: int) -> torch.Tensor:
    """(B, S) or (B, T, S) 0/1 mask -> broadcastable (B, 1, 1|T, S) boolean 'may attend'."""
    if mask.dim() == 2:
        mask = mask[:, None, None, :]
    elif mask.dim() == 3:
        mask = mask[:, None, :, :]
    else:
        raise ValueError(f"attention masks must be (batch, keys) or (batch, queries, keys), got {tuple(mask.shape)}")
    if mask.shape[0] != batch:
        raise ValueError(f"attention mask batch size {mask.shape[0]} does not match the inputs' {batch}")
    return mask.bool() if mask.dtype == torch.bool else mask != 0


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    # The dtype's lowest finite value, not -inf, so a fully masked row stays finite (as in transformers).
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(
        ~allowed, torch.finfo(dtype).min
    )
