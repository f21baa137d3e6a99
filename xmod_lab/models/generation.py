"""Autoregressive decoding for XmodForCausalLM with the tuple KV cache (greedy, temperature, top-k, top-p)."""

from __future__ import annotations

import torch


def _filter_logits(logits: torch.Tensor, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """Mask (B, V) logits outside the top-k / nucleus top-p set with -inf."""
    if top_k is not None and top_k > 0:
        k = min(top_k, logits.shape[-1])
        kth = torch.topk(logits, k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, sorted_idx = torch.sort(logits, descending=True, dim=-1)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # Drop a token when the tokens ranked above it already reach top_p (the best one always stays).
        drop_sorted = (cumulative - sorted_logits.softmax(dim=-1)) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, sorted_idx, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def generate(
    model,
    input_ids: torch.Tensor,
    lang_ids: torch.Tensor | int | None = None,
    attention_mask: torch.Tensor | None = None,
    max_new_tokens: int = 20,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    config = model.config
    if not config.is_decoder:
        raise ValueError("generate() needs a causal model: build it with XmodConfig(is_decoder=True)")
    if input_ids.dim() != 2 or input_ids.shape[1] == 0:
        raise ValueError(
            f"input_ids must be a non-empty (batch, tokens) LongTensor, got {tuple(input_ids.shape)}"
        )
    if do_sample and temperature <= 0:
        raise ValueError(
            f"temperature must be > 0 when sampling, got {temperature}; use do_sample=False for greedy"
        )
    eos_token_id = config.eos_token_id if eos_token_id is None else eos_token_id
    pad_token_id = config.pad_token_id if pad_token_id is None else pad_token_id
    if pad_token_id is None:
        pad_token_id = eos_token_id if eos_token_id is not None else 0

    was_training = model.training
    model.eval()
    batch = input_ids.shape[0]
    device = input_ids.device
    if attention_mask is None:
        attention_mask = (
            input_ids.ne(pad_token_id).long()
            if config.pad_token_id is not None
            else torch.ones_like(input_ids)
        )
    attention_mask = attention_mask.to(device).long()
    # Same positions as one forward over the full sequence: count real tokens only (RoBERTa, pad + 1 ...).
    start = (config.pad_token_id if config.pad_token_id is not None else -1) + 1
    positions = (attention_mask.cumsum(dim=1) - 1).clamp(min=0) + start
    positions = positions.masked_fill(attention_mask == 0, start - 1 if start > 0 else 0)
    next_position = positions.max(dim=1).values + 1  # (B,)

    tokens = input_ids
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    step_ids, step_pos, past = input_ids, positions, None
    try:
        for _ in range(max_new_tokens):
            out = model(
                step_ids,
                lang_ids=lang_ids,
                attention_mask=attention_mask,
                position_ids=step_pos,
                past_key_values=past,
                use_cache=True,
                return_dict=True,
            )
            past = out.past_key_values
            logits = out.logits[:, -1].float()  # (B, V)
            if do_sample:
                logits = _filter_logits(logits / temperature, top_k, top_p)
                next_tokens = torch.multinomial(logits.softmax(dim=-1), 1, generator=generator).squeeze(1)
            else:
                next_tokens = logits.argmax(dim=-1)
            next_tokens = next_tokens.masked_fill(finished, pad_token_id)
            tokens = torch.cat([tokens, next_tokens[:, None]], dim=1)
            if eos_token_id is not None:
                finished = finished | next_tokens.eq(eos_token_id)
                if bool(finished.all()):
                    break
            attention_mask = torch.cat([attention_mask, torch.ones_like(next_tokens)[:, None]], dim=1)
            step_ids, step_pos = next_tokens[:, None], next_position[:, None]
            next_position = next_position + 1
    finally:
        model.train(was_training)
    return tokens
