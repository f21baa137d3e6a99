"""The X-MOD layer maths (Pfeiffer et al., NAACL 2022): RoBERTa plus one bottleneck adapter per language.

Shape glossary, used in every comment below:
    B batch, T tokens (queries), S key/value tokens (T plus cached tokens, or encoder tokens),
    D hidden size, H attention heads, Hd head dim (D / H), F feed-forward size, R adapter bottleneck,
    L languages (adapters per layer).

Post-norm layer (released base checkpoints; reuse LN, LN before adapter):
    a = LN_attn(x + drop(Wo MHA(x)));  f = a + drop(W2 act(W1 a));  h = LN_out(f)
    y = h + drop(Adapter_lang(h));     out = LN_out(y)
Pre-norm layer (xmod-large-prenorm; separate adapter LN, residual before the LN):
    a = x + Wo MHA(LN_attn(x));  f = a + W2 act(W1 LN_out(a));  out = f + drop(Adapter_lang(LN_adapter(f)))

Module and parameter names mirror transformers' state-dict keys, so checkpoints load as they are.
Routing rows to adapters is computed once per forward (`route_languages`, in inputs.py with the other input
checks) and reused by every layer.
The backbone (`XmodModel`) is at the end of this file; the task heads are in heads.py.
Linear layers are called as ``linear(module, x)``: ``module(x)``, except at inference on x86 CPUs, where the
same product runs through oneDNN at about twice MKL's speed on the AMD CPUs we measured (kernels.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache, EncoderDecoderCache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPoolingAndCrossAttentions
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.generic import can_return_tuple

from .configuration import XmodConfig
from .inputs import (
    LanguageRouting,
    check_input_tensors,
    check_length,
    route_languages,
    token_types_error,
    token_types_out_of_range,
)
from .kernels import linear
from .masks import additive_mask, compute_dtype, expand_mask, head_mask_per_layer, self_attention_mask
from .padding import Unpadded, keep_mask, may_skip_padding, may_stop_at_first_token, should_skip
from .pretrained import XmodPreTrainedModel


# ----------------------------------------------------------------------------------- embeddings
class XmodEmbeddings(nn.Module):
    """RoBERTa embeddings: word + token type (+ absolute position) -> LayerNorm -> dropout."""

    def __init__(self, config: XmodConfig) -> None:
        super().__init__()
        self.padding_idx = config.pad_token_id
        self.word_embeddings = nn.Embedding(
            config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id
        )
        self.position_embeddings = nn.Embedding(
            config.max_position_embeddings, config.hidden_size, padding_idx=config.pad_token_id
        )
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.absolute = config.position_embedding_type == "absolute"

    @staticmethod
    def create_position_ids_from_input_ids(
        input_ids: torch.Tensor, padding_idx: int | None, cache_length: int = 0
    ) -> torch.Tensor:
        """(B, T) RoBERTa positions: pad+1, pad+2, ... over non-pad tokens only, after ``cache_length``
        cached tokens; pads keep ``padding_idx`` (fairseq). transformers' signature."""
        pad = padding_idx if padding_idx is not None else -1
        mask = input_ids.ne(pad).int()  # (B, T)
        return ((torch.cumsum(mask, dim=1) + cache_length) * mask).long() + (pad if pad >= 0 else 0)

    @staticmethod
    def create_position_ids_from_inputs_embeds(inputs_embeds: torch.Tensor, padding_idx: int | None) -> torch.Tensor:
        """(B, T) consecutive positions from pad+1: embeddings do not show which tokens are padding
        (nor, as in transformers, how many are cached). transformers' signature."""
        batch, length = inputs_embeds.shape[:2]
        start = (padding_idx or 0) + 1
        return torch.arange(start, start + length, device=inputs_embeds.device).expand(batch, -1)

    def forward(
        self,
        input_ids: torch.Tensor | None,
        token_type_ids: torch.Tensor | None,
        position_ids: torch.Tensor | None,
        inputs_embeds: torch.Tensor | None,
        past_length: int = 0,
    ) -> torch.Tensor:
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)  # (B, T, D)
        batch, length = inputs_embeds.shape[:2]
        if position_ids is None:
            if input_ids is not None:
                position_ids = self.create_position_ids_from_input_ids(input_ids, self.padding_idx, past_length)
            else:
                position_ids = self.create_position_ids_from_inputs_embeds(inputs_embeds, self.padding_idx)
        if token_type_ids is None:
            token_type_ids = torch.zeros((batch, length), dtype=torch.long, device=inputs_embeds.device)
        x = inputs_embeds + self.token_type_embeddings(token_type_ids)
        if self.absolute:
            x = x + self.position_embeddings(position_ids)
        return self.dropout(self.LayerNorm(x))  # (B, T, D)


# ------------------------------------------------------------------------------------ attention
class XmodSelfAttention(nn.Module):
    """Multi-head attention (self or cross) with SDPA, or eager maths when weights/head_mask/relative
    positions are needed. Parameter names are RoBERTa's (query/key/value/distance_embedding).
    Keys and values go through transformers' ``Cache`` (``layer_idx`` names this layer's slot)."""

    def __init__(self, config: XmodConfig, layer_idx: int = 0, is_cross_attention: bool = False) -> None:
        super().__init__()
        pruned = [] if is_cross_attention else config.pruned_heads.get(layer_idx, [])
        self.num_heads = config.num_attention_heads - len(pruned)
        self.head_dim = config.head_dim
        inner = self.num_heads * self.head_dim  # D unless heads were pruned
        self.query = nn.Linear(config.hidden_size, inner)
        self.key = nn.Linear(config.hidden_size, inner)
        self.value = nn.Linear(config.hidden_size, inner)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)
        self.layer_idx = layer_idx
        self.is_cross_attention = is_cross_attention
        relative = None if is_cross_attention else config.position_embedding_type
        self.relative = None if relative == "absolute" else relative
        self.max_positions = config.max_position_embeddings
        if self.relative is not None:
            self.distance_embedding = nn.Embedding(2 * config.max_position_embeddings - 1, self.head_dim)
        self.config = config  # read at call time: attn_implementation can be switched after loading

    def _heads(self, x: torch.Tensor, padding: Unpadded | None = None) -> torch.Tensor:
        if padding is not None:  # (N, D) kept tokens -> (B, T, D), zeros where padding was skipped
            x = padding.pad(x)
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, Hd)

    def _keys_values(self, x, encoder_states, cache, padding=None):
        if not self.is_cross_attention:
            k, v = self._heads(linear(self.key, x), padding), self._heads(linear(self.value, x), padding)  # (B, H, T, Hd)
            if cache is not None:
                own = cache.self_attention_cache if isinstance(cache, EncoderDecoderCache) else cache
                k, v = own.update(k, v, self.layer_idx)  # (B, H, S, Hd) with the cached tokens
            return k, v
        if cache is not None and cache.is_updated.get(self.layer_idx):
            layer = cache.cross_attention_cache.layers[self.layer_idx]
            return layer.keys, layer.values  # encoder keys/values never change while decoding
        k, v = self._heads(linear(self.key, encoder_states)), self._heads(linear(self.value, encoder_states))
        if cache is not None:
            k, v = cache.cross_attention_cache.update(k, v, self.layer_idx)
            cache.is_updated[self.layer_idx] = True
        return k, v

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None,
        head_mask: torch.Tensor | None = None,
        encoder_states: torch.Tensor | None = None,
        cache: Cache | None = None,
        output_attentions: bool = False,
        padding: Unpadded | None = None,
        queries: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``queries`` (B, 1, D): attend for these (each row's first token) instead of for every ``x``."""
        if queries is None:
            q = self._heads(linear(self.query, x), padding)  # (B, H, T, Hd)
        else:
            q = self._heads(linear(self.query, queries))  # (B, H, 1, Hd)
        k, v = self._keys_values(x, encoder_states, cache, padding)  # (B, H, S, Hd)
        if mask is not None and mask.dtype != q.dtype:
            mask = mask.to(q.dtype)
        dropout_p = self.dropout.p if self.training else 0.0
        eager = self.config.attn_implementation == "eager"
        if not eager and not output_attentions and head_mask is None and self.relative is None:
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
            probs = None
        else:
            ctx, probs = self._eager(q, k, v, mask, head_mask)
        batch, _, length, _ = ctx.shape
        ctx = ctx.transpose(1, 2).reshape(batch, length, self.num_heads * self.head_dim)  # (B, T, D)
        if padding is not None and queries is None:
            ctx = padding.unpad(ctx)  # (N, D)
        return ctx, probs if output_attentions else None

    def _eager(self, q, k, v, mask, head_mask):
        scores = torch.matmul(q, k.transpose(-1, -2))  # (B, H, T, S)
        if self.relative is not None:
            scores = scores + self._relative_scores(q, k)
        scores = scores / math.sqrt(self.head_dim)
        if mask is not None:
            scores = scores + mask
        probs = self.dropout(scores.softmax(dim=-1))  # (B, H, T, S)
        if head_mask is not None:
            probs = probs * head_mask
        return torch.matmul(probs, v), probs  # (B, H, T, Hd)

    def _relative_scores(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        # Shaw et al. (relative_key) and Huang et al. method 4 (relative_key_query), as in BERT.
        t, s = q.shape[2], k.shape[2]
        left = torch.arange(s - t, s, device=q.device).view(-1, 1)  # query positions, after any cache
        right = torch.arange(s, device=q.device).view(1, -1)
        rel = self.distance_embedding(left - right + self.max_positions - 1).to(q.dtype)  # (T, S, Hd)
        scores = torch.einsum("bhtd,tsd->bhts", q, rel)
        if self.relative == "relative_key_query":
            scores = scores + torch.einsum("bhsd,tsd->bhts", k, rel)
        return scores


class XmodSelfOutput(nn.Module):
    """Attention output projection; its LayerNorm is post-LN or (pre_norm) the pre-LN of the block."""

    def __init__(self, config: XmodConfig, num_heads: int) -> None:
        super().__init__()
        self.dense = nn.Linear(num_heads * config.head_dim, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)


class XmodAttention(nn.Module):
    def __init__(self, config: XmodConfig, layer_idx: int = 0, is_cross_attention: bool = False) -> None:
        super().__init__()
        self.self = XmodSelfAttention(config, layer_idx, is_cross_attention)
        self.output = XmodSelfOutput(config, self.self.num_heads)
        self.pre_norm = config.pre_norm

    def forward(
        self,
        x,
        mask,
        head_mask=None,
        encoder_states=None,
        cache=None,
        output_attentions=False,
        padding=None,
        queries=None,
    ):
        residual = x if queries is None else queries
        if self.pre_norm:
            x = self.output.LayerNorm(x)
            queries = self.output.LayerNorm(queries) if queries is not None else None
        ctx, probs = self.self(x, mask, head_mask, encoder_states, cache, output_attentions, padding, queries)
        out = self.output.dropout(linear(self.output.dense, ctx)) + residual  # (B, T, D)
        if not self.pre_norm:
            out = self.output.LayerNorm(out)
        return out, probs


# ------------------------------------------------------------------------- feed-forward + adapters
class XmodIntermediate(nn.Module):
    def __init__(self, config: XmodConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.intermediate_act_fn = ACT2FN[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.intermediate_act_fn(linear(self.dense, x))  # (B, T, F)


class XmodAdapter(nn.Module):
    """A language adapter: Linear(D, R) -> act -> Linear(R, D); no internal dropout, no scaling."""

    def __init__(self, config: XmodConfig) -> None:
        super().__init__()
        bottleneck = config.adapter_bottleneck_size
        self.dense1 = nn.Linear(config.hidden_size, bottleneck)
        self.dense2 = nn.Linear(bottleneck, config.hidden_size)
        self.adapter_act_fn = ACT2FN[config.adapter_activation or config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(self.dense2, self.adapter_act_fn(linear(self.dense1, x)))  # (B, T, R) -> (B, T, D)


class XmodOutput(nn.Module):
    """FFN output projection + residual, then the language adapter block (if this layer has one)."""

    def __init__(self, config: XmodConfig, has_adapters: bool = True) -> None:
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.has_adapters = has_adapters
        self.ln_before_adapter = config.ln_before_adapter
        self.adapter_reuse_layer_norm = config.adapter_reuse_layer_norm
        if has_adapters and config.adapter_layer_norm:
            self.adapter_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        else:
            self.adapter_layer_norm = None
        keys = config.adapter_keys if has_adapters else []
        self.adapter_modules = nn.ModuleDict({key: XmodAdapter(config) for key in keys})

    def forward(self, x: torch.Tensor, residual: torch.Tensor, routing: LanguageRouting) -> torch.Tensor:
        h = self.dropout(linear(self.dense, x)) + residual  # (B, T, D)
        if not self.has_adapters:
            return h
        return self.lang_adapter(routing, h)

    def lang_adapter(self, routing: LanguageRouting, h: torch.Tensor) -> torch.Tensor:
        residual = h
        if self.adapter_layer_norm is not None:  # takes precedence over reusing output.LayerNorm
            h = self.adapter_layer_norm(h)
        elif self.adapter_reuse_layer_norm:
            h = self.LayerNorm(h)
        if self.ln_before_adapter:
            residual = h
        return self.dropout(routing.apply(self.adapter_modules, h)) + residual  # (B, T, D)


class XmodLayer(GradientCheckpointingLayer):
    def __init__(self, config: XmodConfig, layer_idx: int = 0, has_adapters: bool = True) -> None:
        super().__init__()
        self.attention = XmodAttention(config, layer_idx)
        if config.add_cross_attention:
            self.crossattention = XmodAttention(config, layer_idx, is_cross_attention=True)
        self.intermediate = XmodIntermediate(config)
        self.output = XmodOutput(config, has_adapters)
        self.pre_norm = config.pre_norm

    def forward(
        self,
        x: torch.Tensor,
        routing: LanguageRouting,
        mask: torch.Tensor | None = None,
        head_mask: torch.Tensor | None = None,
        encoder_states: torch.Tensor | None = None,
        encoder_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        output_attentions: bool = False,
        padding: Unpadded | None = None,
        first_token_only: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """``x`` is (B, T, D), or (N, D) kept tokens when ``padding`` says where they sit (padding.py).
        ``first_token_only``: return (B, 1, D), the layer's output for each row's first token alone (all
        tokens are still keys and values); ``routing`` is then per row."""
        queries = None
        if first_token_only:
            queries = x[:, :1] if padding is None else x.index_select(0, padding.row_starts).unsqueeze(1)
        a, self_probs = self.attention(
            x, mask, head_mask, cache=cache, output_attentions=output_attentions, padding=padding, queries=queries
        )
        cross_probs = None
        if encoder_states is not None:
            if not hasattr(self, "crossattention"):
                raise ValueError(
                    "encoder_hidden_states were passed but the model has no cross-attention: build it with "
                    "XmodConfig(is_decoder=True, add_cross_attention=True)"
                )
            a, cross_probs = self.crossattention(
                a, encoder_mask, head_mask, encoder_states, cache, output_attentions
            )
        residual = a
        if self.pre_norm:
            a = self.output.LayerNorm(a)
        out = self.output(self.intermediate(a), residual, routing)
        if not self.pre_norm:
            out = self.output.LayerNorm(out)
        return out, self_probs, cross_probs


class XmodEncoder(nn.Module):
    def __init__(self, config: XmodConfig) -> None:
        super().__init__()
        adapter_layers = set(config.adapter_layer_ids)
        self.layer = nn.ModuleList(
            XmodLayer(config, i, i in adapter_layers) for i in range(config.num_hidden_layers)
        )
        # final LN, only in pre-norm models
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if config.pre_norm else None

    def forward(
        self,
        x: torch.Tensor,
        routing: LanguageRouting,
        mask: torch.Tensor | None = None,
        head_mask: torch.Tensor | None = None,
        encoder_states: torch.Tensor | None = None,
        encoder_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        padding: Unpadded | None = None,
        first_token_only: LanguageRouting | None = None,
    ) -> tuple[torch.Tensor, tuple | None, tuple | None, tuple | None]:
        """With ``padding``, ``x`` is (N, D) kept tokens; the states returned are (B, T, D) again.
        ``first_token_only`` (the per-row routing): the last layer computes each row's first token only
        and the last state is (B, 1, D), all a sentence classifier reads."""
        last_layer = len(self.layer) - 1 if first_token_only is not None else -1

        def padded(h: torch.Tensor) -> torch.Tensor:
            return padding.pad(h) if padding is not None and h.dim() == 2 else h

        hidden, attentions, cross = [], [], []
        for i, layer in enumerate(self.layer):
            if output_hidden_states:
                hidden.append(padded(x))
            layer_head_mask = head_mask[i] if head_mask is not None else None
            first = i == last_layer
            x, probs, cross_probs = layer(
                x, first_token_only if first else routing, mask, layer_head_mask, encoder_states, encoder_mask,
                cache=cache, output_attentions=output_attentions, padding=padding, first_token_only=first,
            )  # fmt: skip
            attentions.append(probs)
            cross.append(cross_probs)
        if self.LayerNorm is not None:
            x = self.LayerNorm(x)
        x = padded(x)
        if output_hidden_states:
            hidden.append(x)
        return (
            x,
            tuple(hidden) if output_hidden_states else None,
            tuple(attentions) if output_attentions else None,
            tuple(cross) if output_attentions and encoder_states is not None else None,
        )


class XmodPooler(nn.Module):
    """tanh(W h_<s>): the first token's final state."""

    def __init__(self, config: XmodConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = nn.Tanh()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(x[:, 0]))  # (B, D)


# ------------------------------------------------------------------------------------- backbone
class XmodModel(XmodPreTrainedModel):
    """The bare X-MOD encoder (or decoder, with ``is_decoder``/``add_cross_attention``)."""

    def __init__(self, config: XmodConfig, add_pooling_layer: bool = True) -> None:
        super().__init__(config)
        self.embeddings = XmodEmbeddings(config)
        self.encoder = XmodEncoder(config)
        self.pooler = XmodPooler(config) if add_pooling_layer else None
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings.word_embeddings = value

    @can_return_tuple
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache", raise_if_both_names=True)  # as transformers
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        lang_ids: torch.Tensor | int | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        head_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        keep_positions: torch.Tensor | None = None,
        first_token_only: bool = False,
    ) -> BaseModelOutputWithPoolingAndCrossAttentions:
        """``lang_ids`` (B,): indices into ``config.languages`` (or one python int for the whole batch);
        ``cache``: transformers' ``DynamicCache`` (``EncoderDecoderCache`` with cross-attention).

        When padding is skipped (``config.skip_padding``, padding.py), outputs at padding positions are
        zeros, except position 0 and the positions in ``keep_positions`` (B, T) bool, which are computed
        as without skipping (heads pass the positions their loss reads). ``first_token_only`` (sentence
        heads): the last layer computes only each row's first token, ``last_hidden_state`` is (B, 1, D);
        ignored where that would change other outputs (hidden states, attentions, head mask, decoders,
        relative positions, 3-D masks)."""
        cfg = self.config
        output_attentions = cfg.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = cfg.output_hidden_states if output_hidden_states is None else output_hidden_states
        use_cache = (cfg.use_cache if use_cache is None else use_cache) if cfg.is_decoder else False

        source = check_input_tensors(input_ids, inputs_embeds, cache)
        batch, length = source.shape[:2]
        device = source.device
        if use_cache and cache is None:
            cache = DynamicCache(config=cfg)
            if encoder_hidden_states is not None:
                cache = EncoderDecoderCache(cache, DynamicCache(config=cfg))
        past_length = cache.get_seq_length() if cache is not None else 0
        check_length(cfg, past_length + length, position_ids)
        keep = None
        if may_skip_padding(cfg, attention_mask, batch, length, cache, encoder_hidden_states):
            keep = keep_mask(attention_mask.to(device), keep_positions, causal=cfg.is_decoder)  # (B, T)
        routing, bad_token_types = route_languages(
            cfg, lang_ids, batch, device, also_check=token_types_out_of_range(cfg, token_type_ids),
            row_tokens=keep.sum(1) if keep is not None else None,
        )  # fmt: skip
        if bad_token_types:
            raise token_types_error(cfg, token_type_ids)

        x = self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds, past_length)  # (B, T, D)
        dtype = compute_dtype(x)
        mask = self_attention_mask(cfg, attention_mask, batch, length, past_length, device, dtype)
        encoder_mask = None
        if encoder_hidden_states is not None and encoder_attention_mask is not None:
            encoder_mask = additive_mask(expand_mask(encoder_attention_mask, batch), dtype)
        head_mask = head_mask_per_layer(cfg, head_mask, dtype)
        first_only = None
        if first_token_only and may_stop_at_first_token(
            cfg, mask, output_attentions or output_hidden_states, head_mask, cache, encoder_hidden_states
        ):
            first_only = routing  # the last layer's rows are routed as rows
        padding = None
        if keep is not None and should_skip(cfg.skip_padding, routing.tokens, batch * length):
            padding = Unpadded.from_keep(keep, routing.tokens)
            x = padding.unpad(x)  # (N, D): the encoder's token-wise work runs on the kept tokens only
            routing = routing.for_tokens(padding.rows)

        last, hidden, attentions, cross = self.encoder(
            x, routing, mask, head_mask, encoder_hidden_states, encoder_mask,
            cache=cache, output_attentions=output_attentions, output_hidden_states=output_hidden_states,
            padding=padding, first_token_only=first_only,
        )  # fmt: skip
        return BaseModelOutputWithPoolingAndCrossAttentions(
            last_hidden_state=last,
            pooler_output=self.pooler(last) if self.pooler is not None else None,
            hidden_states=hidden,
            cache=cache if use_cache else None,
            attentions=attentions,
            cross_attentions=cross,
        )
