"""Regenerate tests/models/reference/: outputs of transformers 4.x X-MOD for what transformers 5 dropped.

transformers 5 removed relative position embeddings (relative_key, relative_key_query) and head_mask,
which the v4.37.2 API has; this script records 4.x's eager outputs on tiny models with fixed seeds so
tests can compare xmod-lab against them without 4.x installed.

Run with transformers 4.x importable, e.g. (torch from the project venv, 4.x in a side directory):

    .venv/bin/pip install --target /tmp/tf4lib 'transformers>=4.44,<5' 'huggingface_hub<1'
    PYTHONPATH=/tmp/tf4lib .venv/bin/python scripts/make_reference_outputs.py

or in a throwaway venv: python3 -m venv /tmp/tf4 && /tmp/tf4/bin/pip install torch 'transformers>=4.44,<5' safetensors.
Each case writes <case>.json (config, class, inputs' kwargs names, versions) and <case>.safetensors
(weights under "weights.", inputs under "inputs.", outputs under "outputs.").
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import transformers
from safetensors.torch import save_file

OUT_DIR = Path(__file__).resolve().parents[1] / "tests" / "models" / "reference"
BASE = dict(
    vocab_size=40,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=24,
    type_vocab_size=1,
    layer_norm_eps=1e-5,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
    languages=["en_XX", "de_DE", "fr_XX"],
)
PRE_NORM = dict(
    pre_norm=True, adapter_layer_norm=True, adapter_reuse_layer_norm=False, ln_before_adapter=False
)


def _batch(seed: int, batch: int = 3, length: int = 8) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, BASE["vocab_size"], (batch, length), generator=g)
    ids[:, 0] = 0
    ids[1, -3:] = 1  # right padding
    return {"input_ids": ids, "attention_mask": ids.ne(1).long(), "lang_ids": torch.tensor([2, 0, 2])}


CASES = {
    # name: (class, config overrides, extra inputs builder, output names)
    "relative_key_mlm": (
        "XmodForMaskedLM",
        dict(position_embedding_type="relative_key"),
        lambda b: {"labels": b["input_ids"].masked_fill(b["input_ids"].eq(1), -100)},
        ("loss", "logits", "hidden_states", "attentions"),
    ),
    "relative_key_query_prenorm_seqcls": (
        "XmodForSequenceClassification",
        dict(position_embedding_type="relative_key_query", num_labels=3, **PRE_NORM),
        lambda b: {"labels": torch.tensor([0, 2, 1])},
        ("loss", "logits", "hidden_states"),
    ),
    "head_mask_model": (
        "XmodModel",
        dict(),
        lambda b: {"head_mask": torch.tensor([[1.0, 0.0, 1.0, 0.5], [0.0, 1.0, 1.0, 1.0]])},
        ("last_hidden_state", "pooler_output", "attentions"),
    ),
    "head_mask_1d_prenorm_tokcls": (
        "XmodForTokenClassification",
        dict(num_labels=5, **PRE_NORM),
        lambda b: {"head_mask": torch.tensor([1.0, 1.0, 0.0, 1.0])},
        ("logits", "attentions"),
    ),
    "relative_key_query_causal": (
        "XmodForCausalLM",
        dict(position_embedding_type="relative_key_query", is_decoder=True),
        lambda b: {"labels": b["input_ids"].masked_fill(b["input_ids"].eq(1), -100), "use_cache": False},
        ("loss", "logits"),
    ),
}


def make_case(name: str, seed: int) -> None:
    cls_name, overrides, extra, output_names = CASES[name]
    config = transformers.XmodConfig(**BASE, **overrides)
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = getattr(transformers, cls_name)(config).eval()
    inputs = _batch(seed)
    inputs.update(extra(inputs))
    with torch.no_grad():
        out = model(**inputs, output_hidden_states="hidden_states" in output_names, output_attentions=True)
    tensors: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        if key.endswith(("position_ids", "token_type_ids")) or key.startswith("lm_head.decoder."):
            continue  # recomputed buffers; tied decoder
        tensors[f"weights.{key}"] = value.contiguous()
    for key, value in inputs.items():
        if isinstance(value, torch.Tensor):
            tensors[f"inputs.{key}"] = value.contiguous()
    for key in output_names:
        value = getattr(out, key)
        if isinstance(value, tuple):
            for i, item in enumerate(value):
                tensors[f"outputs.{key}.{i}"] = item.contiguous()
        else:
            tensors[f"outputs.{key}"] = value.contiguous()
    meta = {
        "class": cls_name,
        "config": {**BASE, **overrides},
        "kwargs": {k: v for k, v in inputs.items() if not isinstance(v, torch.Tensor)},
        "outputs": list(output_names),
        "seed": seed,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
    }
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    save_file(tensors, OUT_DIR / f"{name}.safetensors")
    (OUT_DIR / f"{name}.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    print(f"wrote {name}: {len(tensors)} tensors")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if int(transformers.__version__.split(".")[0]) >= 5:
        raise SystemExit(
            f"transformers {transformers.__version__} has no relative positions or head_mask; run this "
            "with transformers 4.x (see the module docstring)"
        )
    for name in CASES:
        make_case(name, args.seed)


if __name__ == "__main__":
    main()
