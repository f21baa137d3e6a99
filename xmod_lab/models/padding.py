"""Skipping padding in the backbone: token-wise work runs on the kept tokens only.

A padded batch (B, T) with N real tokens is flattened to (N, D) once per forward, after the embeddings.
Every token-wise module (Q/K/V and output projections, FFN, adapters, LayerNorms, dropout) then reads
(N, D). Attention alone needs the padded layout: queries, keys and values are scattered back to
(B, T, D) with zeros at the skipped positions, which the attention mask hides exactly as it hid the
padding's own values (a masked key gets weight exp(min - max) = 0 either way), and the context is
gathered back to (N, D). The last hidden state (and any hidden states asked for) are scattered back
to (B, T, D): positions that were skipped hold zeros.

Which positions are kept (``keep_mask``): every position the attention mask allows, plus position 0
of every row (classification heads and the pooler read it even when it is left padding; as a key it
stays masked), plus the positions a loss reads, plus every position of a row where a kept query sees
no key (a row without real tokens; in a decoder, left padding): such a query attends uniformly to all
of its row's keys, so all of them are needed to give the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# "auto" skips padding when at least this fraction of the batch's positions is padding. Measured
# (docs/benchmarks.md, "Skipping padding", tiny model, CPU): at 5-10% padding gathering and scattering
# cost what they save (0.85-1.11x), from 20% on skipping pays (fine-tuning 1.27x, inference 1.07x).
AUTO_MIN_PADDING = 0.15


def keep_mask(
    attention_mask: torch.Tensor, also: torch.Tensor | None = None, causal: bool = False
) -> torch.Tensor:
    """(B, T) 0/1 mask -> (B, T) bool: the positions whose outputs the forward computes.

    ``also`` (B, T) bool: positions a loss reads whatever the mask says (see ``labelled_positions``).
    ``causal``: a kept padding position before the row's first real token sees no key at all, so,
    as for a row without real tokens, its uniform attention needs every position of the row.
    """
    real = attention_mask != 0
    first = torch.zeros_like(real)
    first[:, 0] = True
    keep = real | first
    if also is not None:
        keep = keep | also.to(keep.device).bool()
    blind = ~real.any(dim=1)  # a row with no real token: all its queries attend to all its keys
    if causal:
        blind = blind | (keep & ~real & (real.cumsum(dim=1) == 0)).any(dim=1)
    return keep | blind[:, None]


def labelled_positions(labels: torch.Tensor | None, shift: int = 0) -> torch.Tensor | None:
    """(B, T) bool: positions whose outputs a token-level loss reads (label != -100), so that a label
    on a padding position is scored exactly as without skipping. ``shift=1``: position t predicts t+1."""
    if labels is None or labels.dim() != 2:
        return None
    wanted = labels != -100
    if shift:
        wanted = torch.cat([wanted[:, shift:], wanted.new_zeros((wanted.shape[0], shift))], dim=1)
    return wanted


def may_skip_padding(config, attention_mask, batch: int, length: int, cache, encoder_states) -> bool:
    """Whether a forward can run on kept tokens only: a 2-D mask, no KV cache, no cross-attention, and
    not under torch.compile (it wants static shapes). ``should_skip`` then decides from the count."""
    return (
        config.skip_padding != "never"
        and attention_mask is not None
        and attention_mask.dim() == 2
        and tuple(attention_mask.shape) == (batch, length)
        and cache is None
        and encoder_states is None
        and batch * length > 0
        and not torch.compiler.is_compiling()
    )


def may_stop_at_first_token(config, mask, every_token_out: bool, head_mask, cache, encoder_states) -> bool:
    """Whether the last layer may compute each row's first token only: nothing else asks for every
    token's output (``every_token_out``: hidden states or attentions), no head mask, no decoder or
    cache, absolute positions (relative scores assume the queries are the last positions), and a
    (B, 1, 1, S) mask that broadcasts over one query."""
    return (
        not (every_token_out or config.is_decoder)
        and head_mask is None
        and cache is None
        and encoder_states is None
        and config.position_embedding_type == "absolute"
        and (mask is None or mask.shape[2] == 1)
        and config.num_hidden_layers > 0
    )


def should_skip(mode: str, kept: int, positions: int) -> bool:
    """Whether to skip padding for a batch that keeps ``kept`` of its ``positions``."""
    if mode == "never" or kept == positions:
        return False
    if mode == "always":
        return True
    return 1.0 - kept / positions >= AUTO_MIN_PADDING


def skipped_in_forward(config, attention_mask, source: torch.Tensor, encoder_states, also=None) -> Unpadded | None:
    """Where the kept tokens sit when a forward of ``XmodModel`` skips padding (the same three rules:
    ``may_skip_padding``, ``keep_mask``, ``should_skip``), or None when it does not skip; a head may then
    leave the skipped positions out too. ``source``: input_ids (B, T) or inputs_embeds (B, T, D). One host
    sync (the kept count)."""
    batch, length = source.shape[:2]
    if not may_skip_padding(config, attention_mask, batch, length, None, encoder_states):
        return None
    keep = keep_mask(attention_mask.to(source.device), also, causal=config.is_decoder)
    kept = int(keep.sum())
    return Unpadded.from_keep(keep, kept) if should_skip(config.skip_padding, kept, batch * length) else None


@dataclass
class Unpadded:
    """Where the N kept tokens of a (B, T) batch sit: flat positions b * T + t, in row-major order."""

    indices: torch.Tensor  # (N,)
    batch: int
    length: int

    @classmethod
    def from_keep(cls, keep: torch.Tensor, kept: int) -> Unpadded:
        # nonzero_static with the size already fetched: no second host sync.
        indices = torch.nonzero_static(keep.reshape(-1), size=kept).squeeze(1)
        return cls(indices, keep.shape[0], keep.shape[1])

    @property
    def rows(self) -> torch.Tensor:
        """(N,) the batch row of every kept token."""
        return torch.div(self.indices, self.length, rounding_mode="floor")

    @property
    def row_starts(self) -> torch.Tensor:
        """(B,) where each row's position 0 sits among the kept tokens (it is always kept)."""
        starts = torch.arange(self.batch, device=self.indices.device) * self.length
        return torch.searchsorted(self.indices, starts)

    def unpad(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, ...) -> (N, ...)."""
        return x.reshape(self.batch * self.length, *x.shape[2:]).index_select(0, self.indices)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """(N, ...) -> (B, T, ...), zeros at the skipped positions."""
        out = x.new_zeros((self.batch * self.length, *x.shape[1:]))
        return out.index_copy(0, self.indices, x).view(self.batch, self.length, *x.shape[1:])
