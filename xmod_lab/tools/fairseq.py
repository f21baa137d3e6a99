"""fairseq X-MOD checkpoints (``model.pt`` of the released archives) -> xmod-lab / transformers layout.

fairseq no longer installs, so nothing here imports it. The ``model.pt`` is a pickle holding
``model`` (the state dict) and the hyper-parameters as ``cfg["model"]`` (a dict or an omegaconf
DictConfig; fairseq >= 0.10) or ``args`` (an argparse.Namespace; older). The key layout
(fairseq ``models/xmod`` + ``roberta``), with ``P = encoder.sentence_encoder.`` and ``L = P + layers.N.``:

===========================================  =====================================================
fairseq                                      xmod-lab / transformers
===========================================  =====================================================
P embed_tokens / embed_positions             roberta.embeddings.word_embeddings / position_embeddings
P layernorm_embedding (old: emb_layer_norm)  roberta.embeddings.LayerNorm
L self_attn.{q,k,v}_proj (old: in_proj_*)    roberta.encoder.layer.N.attention.self.{query,key,value}
L self_attn.out_proj                         ...attention.output.dense
L self_attn_layer_norm (old: layer_norms.0)  ...attention.output.LayerNorm
L fc1 / fc2                                  ...intermediate.dense / output.dense
L final_layer_norm (old: layer_norms.1)      ...output.LayerNorm
L adapter_layer_norm                         ...output.adapter_layer_norm
L adapter_modules.<lang>.fc1 / fc2           ...output.adapter_modules.<lang>.dense1 / dense2
P layer_norm (pre-norm only)                 roberta.encoder.LayerNorm
encoder.lm_head.{dense,layer_norm}           lm_head.{dense,layer_norm}
encoder.lm_head.weight / bias                lm_head.decoder.weight (tied to the embeddings) / lm_head.bias
classification_heads.<name>.{dense,out_proj} classifier.{dense,out_proj}
===========================================  =====================================================

fairseq has no token type embedding; transformers' single row is set to zero. Very old
checkpoints name the encoder ``decoder.``; both prefixes are read. A checkpoint without adapters
(XLM-R) converts to ``adapter_mode="none"``.
"""

from __future__ import annotations

import argparse
import collections
import io
import logging
import os
import pickle
import re
import shutil
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from xmod_lab.models import XmodConfig, XmodForMaskedLM, XmodForSequenceClassification

logger = logging.getLogger(__name__)

_P = "encoder.sentence_encoder."
_LAYER_RE = re.compile(r"^encoder\.sentence_encoder\.layers\.(\d+)\.(.+)$")
_LAYER_MAP = {
    "self_attn.q_proj": "attention.self.query",
    "self_attn.k_proj": "attention.self.key",
    "self_attn.v_proj": "attention.self.value",
    "self_attn.out_proj": "attention.output.dense",
    "self_attn_layer_norm": "attention.output.LayerNorm",
    "fc1": "intermediate.dense",
    "fc2": "output.dense",
    "final_layer_norm": "output.LayerNorm",
    "adapter_layer_norm": "output.adapter_layer_norm",
}
_TOP_MAP = {
    _P + "embed_tokens.weight": "roberta.embeddings.word_embeddings.weight",
    _P + "embed_positions.weight": "roberta.embeddings.position_embeddings.weight",
    _P + "layernorm_embedding.weight": "roberta.embeddings.LayerNorm.weight",
    _P + "layernorm_embedding.bias": "roberta.embeddings.LayerNorm.bias",
    _P + "layer_norm.weight": "roberta.encoder.LayerNorm.weight",
    _P + "layer_norm.bias": "roberta.encoder.LayerNorm.bias",
}
_LM_HEAD_MAP = {
    "encoder.lm_head.dense.weight": "lm_head.dense.weight",
    "encoder.lm_head.dense.bias": "lm_head.dense.bias",
    "encoder.lm_head.layer_norm.weight": "lm_head.layer_norm.weight",
    "encoder.lm_head.layer_norm.bias": "lm_head.layer_norm.bias",
    "encoder.lm_head.weight": "lm_head.decoder.weight",
    "encoder.lm_head.bias": "lm_head.bias",
}
# Bookkeeping buffers with no counterpart.
_IGNORED_RE = re.compile(r"(^|\.)(version|_float_tensor)$")
# fairseq activation names -> transformers'. gelu_accurate is the tanh approximation.
_ACTIVATIONS = {
    "gelu": "gelu",
    "gelu_accurate": "gelu_new",
    "gelu_fast": "gelu_new",
    "relu": "relu",
    "tanh": "tanh",
    "linear": "linear",
    "swish": "silu",
}


# ---------------------------------------------------------------------------------- hyper-parameters
def _to_plain(value: Any) -> Any:
    try:  # omegaconf is a dependency of Hydra, but keep this module usable without it
        from omegaconf import OmegaConf

        if OmegaConf.is_config(value):
            return OmegaConf.to_container(value, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    if isinstance(value, argparse.Namespace):
        return vars(value)
    return value


def fairseq_model_args(args: Any) -> dict[str, Any]:
    """The model hyper-parameters of a fairseq checkpoint as a plain dict.

    Accepts a whole checkpoint (``{"cfg": {"model": ...}}`` or ``{"args": Namespace}``), a cfg dict,
    the model section itself, an argparse.Namespace or an omegaconf config.
    """
    args = _to_plain(args)
    if args is None:
        return {}
    if not isinstance(args, Mapping):
        raise TypeError(
            f"fairseq args must be a dict, Namespace or omegaconf config, got {type(args).__name__}"
        )
    for section in ("cfg", "args"):  # a whole checkpoint: its "model" entry is the state dict
        if args.get(section):
            return fairseq_model_args(args[section])
    model = _to_plain(args.get("model"))
    if isinstance(model, Mapping) and not any(isinstance(v, torch.Tensor) for v in model.values()):
        return dict(model)  # a cfg: the model section holds the architecture
    return dict(args)


# ---------------------------------------------------------------------------------- state dict
def _normalise_keys(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Undo fairseq's historic renames and split fused q/k/v so one mapping fits every vintage."""
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if not isinstance(value, torch.Tensor):
            continue
        key = key.removeprefix("module.")
        if key.startswith("decoder."):  # RoBERTa checkpoints before fairseq 0.9
            key = "encoder." + key.removeprefix("decoder.")
        key = key.replace(_P + "emb_layer_norm.", _P + "layernorm_embedding.")
        key = re.sub(r"\.layer_norms\.0\.", ".self_attn_layer_norm.", key)
        key = re.sub(r"\.layer_norms\.1\.", ".final_layer_norm.", key)
        if key.endswith("self_attn.in_proj_weight") or key.endswith("self_attn.in_proj_bias"):
            stem, kind = key.rsplit(".in_proj_", 1)
            for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0), strict=True):
                out[f"{stem}.{name}.{kind}"] = part
            continue
        out[key] = value
    return out


def _languages_in(sd: Mapping[str, torch.Tensor]) -> list[str]:
    # Insertion order of the state dict = the order fairseq built adapter_modules = cfg.languages.
    seen: dict[str, None] = {}
    for key in sd:
        match = re.match(r"^encoder\.sentence_encoder\.layers\.0\.adapter_modules\.([^.]+)\.", key)
        if match:
            seen.setdefault(match.group(1))
    return list(seen)


# fairseq's register_model_architecture defaults, for checkpoints whose saved args omit them.
_BASE_ARCH = dict(
    encoder_attention_heads=12, adapter_layer_norm=False, adapter_reuse_layer_norm=True, ln_before_adapter=True,
    bottleneck=2,
)  # fmt: skip
_ARCH_DEFAULTS = {
    "xmod_base": _BASE_ARCH,
    **{f"xmod_base_{n}": _BASE_ARCH for n in (13, 30, 60, 75)},
    "xmod_large_prenorm": dict(
        encoder_attention_heads=16,
        adapter_layer_norm=True,
        adapter_reuse_layer_norm=False,
        ln_before_adapter=False,
        bottleneck=4,
    ),  # fmt: skip
}
_FLAGS = ("adapter_reuse_layer_norm", "ln_before_adapter")


def _with_arch_defaults(a: dict[str, Any]) -> dict[str, Any]:
    defaults = _ARCH_DEFAULTS.get(str(a.get("arch") or a.get("_name") or ""))
    if defaults is None:
        assumed = [key for key in _FLAGS if key not in a]
        if assumed:
            logger.warning(
                "fairseq args name no known X-MOD architecture (arch=%r) and omit %s: assuming xmod_base's %s",
                a.get("arch"),
                assumed,
                {key: _BASE_ARCH[key] for key in assumed},
            )
        return a
    return {**defaults, **a}


def fairseq_config(sd: Mapping[str, torch.Tensor], args: Any, num_labels: int | None = None) -> XmodConfig:
    """An XmodConfig for a (normalised) fairseq state dict and its hyper-parameters."""
    a = _with_arch_defaults(fairseq_model_args(args))
    try:
        vocab_size, hidden = sd[_P + "embed_tokens.weight"].shape
        max_positions = sd[_P + "embed_positions.weight"].shape[0]
    except KeyError as err:
        raise ValueError(f"not a fairseq RoBERTa/X-MOD state dict: {err.args[0]!r} is missing") from None
    layer_ids = {int(m.group(1)) for m in map(_LAYER_RE.match, sd) if m}
    if layer_ids != set(range(len(layer_ids))):
        raise ValueError(f"fairseq state dict has non-contiguous layers {sorted(layer_ids)}")
    intermediate = sd[_P + "layers.0.fc1.weight"].shape[0]
    if "encoder_attention_heads" not in a:
        raise ValueError(
            "the fairseq args lack encoder_attention_heads (not recoverable from weights); pass args with it"
        )
    heads = int(a["encoder_attention_heads"])

    found = _languages_in(sd)
    languages = list(a.get("languages") or [])
    if found and not languages:
        # Exact: fairseq built adapter_modules in cfg.languages order and state dicts keep insertion order.
        logger.info("fairseq args list no languages; using the adapter order of the state dict: %s", found)
        languages = found
    if found and set(found) != set(languages):
        raise ValueError(
            f"args.languages {languages} and the adapters in the state dict {found} disagree; fix the args"
        )
    has_adapters = bool(found)
    if not has_adapters and a.get("adapter_modules"):
        raise ValueError("args say adapter_modules=True but the state dict holds no adapter weights")

    factor: int | float = 2
    if has_adapters:
        bottleneck = sd[f"{_P}layers.0.adapter_modules.{languages[0]}.fc1.weight"].shape[0]
        factor = a.get("bottleneck")
        if factor is None or hidden // factor != bottleneck:
            inferred = hidden / bottleneck
            if factor is not None:
                logger.warning(
                    "args.bottleneck=%s gives %d, the adapters have %d: using factor %s",
                    factor,
                    hidden // factor,
                    bottleneck,
                    inferred,
                )
            factor = int(inferred) if float(inferred).is_integer() else inferred
    has_adapter_ln = (_P + "layers.0.adapter_layer_norm.weight") in sd
    if "adapter_layer_norm" in a and bool(a["adapter_layer_norm"]) != has_adapter_ln:
        raise ValueError(
            f"args.adapter_layer_norm={a['adapter_layer_norm']} but the state dict "
            f"{'has' if has_adapter_ln else 'has no'} adapter_layer_norm weights"
        )
    pre_norm = (_P + "layer_norm.weight") in sd
    if bool(a.get("encoder_normalize_before", pre_norm)) != pre_norm:
        raise ValueError(
            "args.encoder_normalize_before disagrees with the presence of the final encoder LayerNorm"
        )
    activation = a.get("activation_fn", "gelu")
    if activation not in _ACTIVATIONS:
        raise ValueError(f"fairseq activation_fn={activation!r} has no transformers equivalent")

    return XmodConfig(
        vocab_size=int(vocab_size),
        hidden_size=int(hidden),
        num_hidden_layers=len(layer_ids),
        num_attention_heads=heads,
        intermediate_size=int(intermediate),
        hidden_act=_ACTIVATIONS[activation],
        hidden_dropout_prob=float(a.get("dropout", 0.1)),
        attention_probs_dropout_prob=float(a.get("attention_dropout", 0.1)),
        max_position_embeddings=int(max_positions),
        type_vocab_size=1,
        layer_norm_eps=1e-5,  # torch's LayerNorm default, used by fairseq
        pad_token_id=1,  # fairseq dictionary: <s>=0 <pad>=1 </s>=2 <unk>=3
        bos_token_id=0,
        eos_token_id=2,
        pre_norm=pre_norm,
        adapter_reduction_factor=factor,
        adapter_layer_norm=has_adapter_ln,
        adapter_reuse_layer_norm=bool(a.get("adapter_reuse_layer_norm", True)),
        ln_before_adapter=bool(a.get("ln_before_adapter", True)),
        languages=languages or ["en_XX"],
        adapter_mode="modular" if has_adapters else "none",
        num_labels=num_labels,
    )


def convert_fairseq_state_dict(
    sd: Mapping[str, torch.Tensor], args: Any, classification_head: str | None = None
) -> tuple[XmodConfig, dict[str, torch.Tensor]]:
    """Map a fairseq X-MOD state dict to (XmodConfig, state dict of XmodForMaskedLM).

    With ``classification_head="<name>"`` the result is an XmodForSequenceClassification state dict
    built from ``classification_heads.<name>`` instead of the LM head. Every fairseq tensor must be
    mapped or knowingly dropped; anything else is an error.
    """
    sd = _normalise_keys(sd)
    num_labels = None
    if classification_head is not None:
        key = f"classification_heads.{classification_head}.out_proj.weight"
        if key not in sd:
            heads = sorted({k.split(".")[1] for k in sd if k.startswith("classification_heads.")})
            raise ValueError(
                f"no classification head {classification_head!r} in the checkpoint; it has {heads}"
            )
        num_labels = sd[key].shape[0]
    config = fairseq_config(sd, args, num_labels)

    out: dict[str, torch.Tensor] = {}
    unmapped: list[str] = []
    for key, value in sd.items():
        target = _TOP_MAP.get(key)
        if target is None and (match := _LAYER_RE.match(key)):
            index, rest = match.groups()
            module, _, param = rest.rpartition(".")
            if module in _LAYER_MAP:
                target = f"roberta.encoder.layer.{index}.{_LAYER_MAP[module]}.{param}"
            elif ad := re.match(r"^adapter_modules\.([^.]+)\.fc([12])$", module):
                target = f"roberta.encoder.layer.{index}.output.adapter_modules.{ad.group(1)}.dense{ad.group(2)}.{param}"
        if target is None and key in _LM_HEAD_MAP:
            if classification_head is not None:
                continue  # the LM head is not part of a classifier
            target = _LM_HEAD_MAP[key]
        if target is None and key.startswith("classification_heads."):
            _, name, rest = key.split(".", 2)
            if name != classification_head:
                continue  # other heads (or all heads, for the MLM model) are left out on purpose
            target = f"classifier.{rest}"
        if target is None:
            if not _IGNORED_RE.search(key):
                unmapped.append(key)
            continue
        out[target] = value.clone()
    if unmapped:
        raise ValueError(f"fairseq keys with no X-MOD counterpart: {unmapped[:10]} ({len(unmapped)} in all)")
    out["roberta.embeddings.token_type_embeddings.weight"] = torch.zeros(
        1, config.hidden_size, dtype=out["roberta.embeddings.word_embeddings.weight"].dtype
    )
    if classification_head is None:
        if "lm_head.decoder.weight" not in out:  # tied in fairseq; older saves store it once
            out["lm_head.decoder.weight"] = out["roberta.embeddings.word_embeddings.weight"]
        if "lm_head.bias" not in out:
            raise ValueError(
                "the fairseq checkpoint has no encoder.lm_head.bias; is it a RoBERTa/X-MOD model?"
            )
        out["lm_head.decoder.bias"] = out["lm_head.bias"]
    return config, out


# ---------------------------------------------------------------------------------- files
class _Stub:
    """Stands in for a fairseq class found in a checkpoint's training state (meters, enums ...)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.__dict__["_args"] = args

    def __setstate__(self, state: Any) -> None:
        self.__dict__["_state"] = state


def _stubbing_pickle_module() -> types.ModuleType:
    module = types.ModuleType("xmod_lab_fairseq_pickle")
    module.__dict__.update(pickle.__dict__)

    class Unpickler(pickle.Unpickler):
        def find_class(self, mod_name: str, name: str) -> Any:
            if mod_name == "fairseq" or mod_name.startswith("fairseq."):
                return type(name, (_Stub,), {"__module__": mod_name})
            try:
                return super().find_class(mod_name, name)
            except (ImportError, AttributeError):  # e.g. a config dataclass of the training script
                logger.warning(
                    "checkpoint pickles %s.%s, which is not importable here: kept as a stub", mod_name, name
                )
                return type(name, (_Stub,), {"__module__": mod_name})

    module.Unpickler = Unpickler
    return module


def _weights_only_globals() -> list[Any]:
    allowed: list[Any] = [
        argparse.Namespace,
        collections.defaultdict,
        collections.OrderedDict,
        typing.Any,
        dict,
        list,
        int,
        float,
        str,
        bool,
    ]
    try:
        from omegaconf import DictConfig, ListConfig, base, nodes

        allowed += [
            DictConfig,
            ListConfig,
            base.ContainerMetadata,
            base.Metadata,
            nodes.AnyNode,
            nodes.StringNode,
            nodes.IntegerNode,
            nodes.FloatNode,
            nodes.BooleanNode,
        ]
    except ImportError:  # pragma: no cover
        pass
    return allowed


def load_fairseq_checkpoint(path: str | os.PathLike, trust_checkpoint: bool = False) -> dict[str, Any]:
    """Read a fairseq ``model.pt`` without fairseq.

    First with ``weights_only=True`` (tensors, argparse.Namespace and plain omegaconf configs only).
    Checkpoints that also pickled fairseq objects (training meters ...) need
    ``trust_checkpoint=True``: a full unpickle, with fairseq classes replaced by inert stubs. Only do
    that for files from a source you trust: unpickling can run arbitrary code.
    """
    data = Path(path).read_bytes()
    try:
        with torch.serialization.safe_globals(_weights_only_globals()):
            checkpoint = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if not trust_checkpoint:
            found = re.search(r"GLOBAL ([\w.]+)", str(err))
            what = f"it pickles {found.group(1)}" if found else str(err).strip().splitlines()[0][:200]
            raise ValueError(
                f"{path} holds objects beyond tensors and configs, so it cannot be read with weights_only=True "
                f"({what}). If you trust the file, pass trust_checkpoint=True (CLI: --trust-checkpoint)."
            ) from None
        checkpoint = torch.load(
            io.BytesIO(data), map_location="cpu", weights_only=False, pickle_module=_stubbing_pickle_module()
        )
    if not isinstance(checkpoint, Mapping) or "model" not in checkpoint:
        raise ValueError(f"{path} is not a fairseq checkpoint (no 'model' entry)")
    return dict(checkpoint)


_FAIRSEQ_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")  # fairseq Dictionary ids 0-3


def read_fairseq_dict(path: str | os.PathLike) -> list[str]:
    """The symbols of a fairseq ``dict.txt`` in id order (ids start at 4, after the specials)."""
    symbols = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        line = line.removesuffix(" #fairseq:overwrite")
        if not line.strip():
            continue
        symbol, sep, count = line.rpartition(" ")
        if not sep or not count.lstrip("-").isdigit():
            raise ValueError(f"{path}:{number}: expected '<symbol> <count>', got {line!r}")
        if symbol not in _FAIRSEQ_SPECIALS:
            symbols.append(symbol)
    return symbols


def fairseq_tokenizer(
    spm_path: str | os.PathLike, dict_path: str | os.PathLike, vocab_size: int | None = None
):
    """A transformers XLM-R-style fast tokenizer giving the ids fairseq gives.

    fairseq encodes text with the sentencepiece model, then maps each piece through ``dict.txt``:
    ``<s>``=0 ``<pad>``=1 ``</s>``=2 ``<unk>``=3, the dict symbols from 4 on, ``<mask>`` after them.
    The vocabulary is built in exactly that order (so it is right even when ``dict.txt`` is not in
    sentencepiece order), with the sentencepiece scores; dict symbols sentencepiece lacks get a
    score below every real piece.
    """
    from sentencepiece import sentencepiece_model_pb2
    from transformers import XLMRobertaTokenizer

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(Path(spm_path).read_bytes())
    if proto.trainer_spec.model_type != sentencepiece_model_pb2.TrainerSpec.UNIGRAM:
        raise ValueError(
            f"{spm_path} is not a unigram sentencepiece model; only unigram (XLM-R's) is supported"
        )
    scores = {piece.piece: piece.score for piece in proto.pieces}
    floor = min(scores.values()) - 10.0
    symbols = read_fairseq_dict(dict_path)
    vocab = (
        [(s, 0.0) for s in _FAIRSEQ_SPECIALS]
        + [(s, scores.get(s, floor)) for s in symbols]
        + [("<mask>", 0.0)]
    )
    if vocab_size is not None and len(vocab) > vocab_size:
        raise ValueError(
            f"{dict_path} gives {len(vocab)} token ids but the model has {vocab_size} embeddings; "
            "this dict.txt does not belong to the checkpoint"
        )
    return XLMRobertaTokenizer(
        vocab=vocab, _spm_precompiled_charsmap=proto.normalizer_spec.precompiled_charsmap
    )


def convert_fairseq_checkpoint(
    model_pt_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    classification_head: str | None = None,
    trust_checkpoint: bool = False,
) -> Path:
    """Convert a fairseq X-MOD ``model.pt`` into an xmod-lab/transformers directory; returns it.

    Writes ``config.json`` and the weights with ``save_pretrained``; when the archive's
    ``sentencepiece.bpe.model`` and ``dict.txt`` sit beside ``model.pt``, also a fast tokenizer that
    reproduces fairseq's token ids (``fairseq_tokenizer``) and copies of both files.
    """
    checkpoint = load_fairseq_checkpoint(model_pt_path, trust_checkpoint)
    args = checkpoint.get("cfg") or checkpoint.get("args")
    config, state_dict = convert_fairseq_state_dict(checkpoint["model"], args, classification_head)
    model_class = XmodForSequenceClassification if classification_head else XmodForMaskedLM
    model = model_class(config)
    wanted = set(model.state_dict())
    missing, unexpected = wanted - set(state_dict), set(state_dict) - wanted
    if missing:
        raise ValueError(f"converted state dict lacks {sorted(missing)[:10]} for {model_class.__name__}")
    model.load_state_dict({k: v for k, v in state_dict.items() if k not in unexpected}, strict=True)
    out = Path(out_dir)
    model.save_pretrained(out)
    archive = Path(model_pt_path).parent
    spm_file, dict_file = archive / "sentencepiece.bpe.model", archive / "dict.txt"
    if spm_file.is_file() and dict_file.is_file():
        fairseq_tokenizer(spm_file, dict_file, config.vocab_size).save_pretrained(str(out))
    else:
        logger.warning(
            "no sentencepiece.bpe.model + dict.txt beside %s: no tokenizer written (released X-MOD models use "
            "the XLM-R tokenizer, FacebookAI/xlm-roberta-base)",
            model_pt_path,
        )
    for source in (spm_file, dict_file):
        if source.is_file():
            shutil.copy2(source, out / source.name)
    logger.info(
        "converted %s -> %s (%s, %d languages)",
        model_pt_path,
        out,
        model_class.__name__,
        len(config.languages),
    )
    return out
