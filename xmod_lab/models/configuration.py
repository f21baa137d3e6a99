"""XmodConfig: the X-MOD hyper-parameters, read from and written to transformers' ``config.json``.

Every field and default of transformers' ``XmodConfig`` (v4.37.2 API) is here, plus the ablation
fields of xmod-lab (``adapter_layers``, ``adapter_activation``, ``adapter_mode``,
``attn_implementation``; a float ``adapter_reduction_factor``). At their defaults the extra fields
describe the released X-MOD, and transformers ignores them when it loads our files.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"

# facebook/xmod-base and facebook/xmod-large-prenorm: the adapter order IS the lang_ids order.
XMOD_LANGUAGES_81: tuple[str, ...] = (
    "en_XX id_ID vi_VN ru_RU fa_IR sv_SE ja_XX fr_XX de_DE ro_RO ko_KR hu_HU es_XX fi_FI uk_UA da_DK "
    "pt_XX no_XX th_TH pl_PL bg_BG nl_XX zh_CN he_IL el_GR it_IT sk_SK hr_HR tr_TR ar_AR cs_CZ lt_LT "
    "hi_IN zh_TW ca_ES ms_MY sl_SI lv_LV ta_IN bn_IN et_EE az_AZ sq_AL sr_RS kk_KZ ka_GE tl_XX ur_PK "
    "is_IS hy_AM ml_IN mk_MK be_BY la_VA te_IN eu_ES gl_ES mn_MN kn_IN ne_NP sw_KE si_LK mr_IN af_ZA "
    "gu_IN cy_GB eo_EO km_KH ky_KG uz_UZ ps_AF pa_IN ga_IE ha_NG am_ET lo_LA ku_TR so_SO my_MM or_IN "
    "sa_IN"
).split()

ADAPTER_MODES = ("modular", "shared", "none")
ATTN_IMPLEMENTATIONS = ("sdpa", "eager")
POSITION_EMBEDDING_TYPES = ("absolute", "relative_key", "relative_key_query")
PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")
SHARED_ADAPTER = "shared"  # adapter_modules key used by adapter_mode="shared"

# Keys transformers writes that describe its runtime, not the architecture; dropped on load.
_IGNORED_KEYS = {
    "transformers_version",
    "_name_or_path",
    "dtype",
    "torch_dtype",
    "_attn_implementation_autoset",
}


class XmodConfig:
    """Configuration of an X-MOD model (same fields, defaults and ``config.json`` as transformers').

    Unknown keys found in a transformers file are kept as attributes and written back, so a round
    trip through xmod-lab loses nothing.
    """

    model_type = "xmod"

    def __init__(
        self,
        vocab_size: int = 30522,
        hidden_size: int = 768,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 12,
        intermediate_size: int = 3072,
        hidden_act: str = "gelu",
        hidden_dropout_prob: float = 0.1,
        attention_probs_dropout_prob: float = 0.1,
        max_position_embeddings: int = 512,
        type_vocab_size: int = 2,
        initializer_range: float = 0.02,
        layer_norm_eps: float = 1e-12,
        pad_token_id: int | None = 1,
        bos_token_id: int | None = 0,
        eos_token_id: int | None = 2,
        position_embedding_type: str = "absolute",
        use_cache: bool = True,
        classifier_dropout: float | None = None,
        pre_norm: bool = False,
        adapter_reduction_factor: int | float = 2,
        adapter_layer_norm: bool = False,
        adapter_reuse_layer_norm: bool = True,
        ln_before_adapter: bool = True,
        languages: Iterable[str] = ("en_XX",),
        default_language: str | None = None,
        is_decoder: bool = False,
        add_cross_attention: bool = False,
        tie_word_embeddings: bool = True,
        num_labels: int | None = None,
        id2label: dict[int, str] | None = None,
        label2id: dict[str, int] | None = None,
        problem_type: str | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        return_dict: bool = True,
        architectures: list[str] | None = None,
        # xmod-lab ablation fields
        adapter_layers: list[int] | None = None,
        adapter_activation: str | None = None,
        adapter_mode: str = "modular",
        attn_implementation: str = "sdpa",
        **kwargs: Any,
    ) -> None:
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.max_position_embeddings = max_position_embeddings
        self.type_vocab_size = type_vocab_size
        self.initializer_range = initializer_range
        self.layer_norm_eps = layer_norm_eps
        self.pad_token_id = pad_token_id
        self.bos_token_id = bos_token_id
        self.eos_token_id = eos_token_id
        self.position_embedding_type = position_embedding_type
        self.use_cache = use_cache
        self.classifier_dropout = classifier_dropout
        self.pre_norm = pre_norm
        self.adapter_reduction_factor = adapter_reduction_factor
        self.adapter_layer_norm = adapter_layer_norm
        self.adapter_reuse_layer_norm = adapter_reuse_layer_norm
        self.ln_before_adapter = ln_before_adapter
        self.languages = [str(code) for code in languages]
        self.default_language = default_language
        self.is_decoder = is_decoder
        self.add_cross_attention = add_cross_attention
        self.tie_word_embeddings = tie_word_embeddings
        self.problem_type = problem_type
        self.output_attentions = output_attentions
        self.output_hidden_states = output_hidden_states
        self.return_dict = return_dict
        self.architectures = list(architectures) if architectures else None
        self.adapter_layers = sorted(int(i) for i in adapter_layers) if adapter_layers is not None else None
        self.adapter_activation = adapter_activation
        self.adapter_mode = adapter_mode
        self.attn_implementation = attn_implementation
        self._set_labels(num_labels, id2label, label2id)
        derived = {k for k, v in vars(type(self)).items() if isinstance(v, property) and v.fset is None}
        for key, value in kwargs.items():
            if key in derived:  # computed here, never stored twice; a file's copy is ignored
                logger.info("config key %r is derived from other fields; ignoring the stored %r", key, value)
            elif key not in _IGNORED_KEYS:
                setattr(self, key, value)
        self.validate()

    # ----------------------------------------------------------------- labels
    def _set_labels(self, num_labels: int | None, id2label: dict | None, label2id: dict | None) -> None:
        if id2label is not None:
            id2label = {int(k): str(v) for k, v in id2label.items()}
            if num_labels is not None and num_labels != len(id2label):
                raise ValueError(
                    f"num_labels={num_labels} disagrees with id2label ({len(id2label)} entries); pass one of them"
                )
        else:
            id2label = {i: f"LABEL_{i}" for i in range(num_labels if num_labels is not None else 2)}
        self.id2label = id2label
        if label2id is None:
            label2id = {v: k for k, v in id2label.items()}
        self.label2id = {str(k): int(v) for k, v in label2id.items()}

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @num_labels.setter
    def num_labels(self, value: int) -> None:
        if value != len(self.id2label):
            self._set_labels(value, None, None)

    # ---------------------------------------------------------- derived sizes
    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def adapter_bottleneck_size(self) -> int:
        """R = max(1, round(hidden_size / factor)); a whole-number factor floors instead, exactly like
        transformers (``hidden_size // factor``), so its checkpoints of any size load."""
        factor = self.adapter_reduction_factor
        if isinstance(factor, int) or float(factor).is_integer():
            return max(1, self.hidden_size // int(factor))  # transformers' floor division for ints
        return max(1, round(self.hidden_size / factor))

    @property
    def adapter_layer_ids(self) -> list[int]:
        """Indices of the layers that hold language adapters (none when adapter_mode="none")."""
        if self.adapter_mode == "none":
            return []
        if self.adapter_layers is None:
            return list(range(self.num_hidden_layers))
        return list(self.adapter_layers)

    @property
    def adapter_keys(self) -> list[str]:
        """The keys of every layer's ``adapter_modules``."""
        if self.adapter_mode == "shared":
            return [SHARED_ADAPTER]
        if self.adapter_mode == "none":
            return []
        return list(self.languages)

    @property
    def use_return_dict(self) -> bool:
        return self.return_dict

    # --------------------------------------------------------------- languages
    def lang_id(self, code: str) -> int:
        """Index of a language code in ``languages`` (the value to put in ``lang_ids``)."""
        try:
            return self.languages.index(code)
        except ValueError:
            raise ValueError(
                f"Unknown language code {code!r}. This model knows {len(self.languages)} languages: "
                f"{self.languages}"
            ) from None

    # -------------------------------------------------------------- validation
    def validate(self) -> None:
        """Raise a ValueError naming the bad field and the fix."""
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be a multiple of num_attention_heads "
                f"({self.num_attention_heads})"
            )
        if not self.languages:
            raise ValueError("languages is empty: give at least one language code, e.g. ['en_XX']")
        bad_codes = [code for code in self.languages if not code or "." in code or code.isspace()]
        if bad_codes:
            raise ValueError(f"language codes must be non-empty and without '.', got {bad_codes}")
        if len(set(self.languages)) != len(self.languages):
            raise ValueError(f"languages has duplicates: {self.languages}")
        if self.default_language is not None and self.default_language not in self.languages:
            raise ValueError(
                f"default_language {self.default_language!r} is not in languages {self.languages}"
            )
        if not isinstance(self.adapter_reduction_factor, int | float) or self.adapter_reduction_factor <= 0:
            raise ValueError(
                f"adapter_reduction_factor must be a positive number, got {self.adapter_reduction_factor!r}"
            )
        if self.adapter_mode not in ADAPTER_MODES:
            raise ValueError(f"adapter_mode must be one of {ADAPTER_MODES}, got {self.adapter_mode!r}")
        if self.attn_implementation not in ATTN_IMPLEMENTATIONS:
            raise ValueError(
                f"attn_implementation must be one of {ATTN_IMPLEMENTATIONS}, got {self.attn_implementation!r}"
            )
        if self.position_embedding_type not in POSITION_EMBEDDING_TYPES:
            raise ValueError(
                f"position_embedding_type must be one of {POSITION_EMBEDDING_TYPES}, "
                f"got {self.position_embedding_type!r}"
            )
        if self.problem_type is not None and self.problem_type not in PROBLEM_TYPES:
            raise ValueError(
                f"problem_type must be one of {PROBLEM_TYPES} or None, got {self.problem_type!r}"
            )
        if self.adapter_layers is not None:
            bad = [i for i in self.adapter_layers if not 0 <= i < self.num_hidden_layers]
            if bad:
                raise ValueError(
                    f"adapter_layers {bad} out of range: layers are 0..{self.num_hidden_layers - 1}"
                )
        if self.add_cross_attention and not self.is_decoder:
            raise ValueError("add_cross_attention=True needs is_decoder=True")

    # -------------------------------------------------------------- serialising
    def to_dict(self) -> dict[str, Any]:
        """Plain dict in transformers' ``config.json`` layout (plus our fields and any unknown keys)."""
        out: dict[str, Any] = {}
        for key, value in self.__dict__.items():
            if key.startswith("_"):
                continue
            out[key] = copy.deepcopy(value)
        out["id2label"] = {str(k): v for k, v in self.id2label.items()}
        out["model_type"] = self.model_type
        if out.get("architectures") is None:
            out.pop("architectures", None)
        return out

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **overrides: Any) -> XmodConfig:
        values = dict(config_dict)
        model_type = values.pop("model_type", cls.model_type)
        if model_type != cls.model_type:
            logger.warning("config has model_type=%r, loading it as an X-MOD config anyway", model_type)
        if "num_labels" in overrides and "id2label" not in overrides:
            # A new label count (e.g. a fresh classifier on a pre-trained encoder) replaces the file's labels.
            if len(values.get("id2label") or {}) != overrides["num_labels"]:
                values.pop("id2label", None)
                values.pop("label2id", None)
        values.update(overrides)
        return cls(**values)

    def save_pretrained(self, save_directory: str | os.PathLike) -> Path:
        path = Path(save_directory)
        if path.exists() and not path.is_dir():
            raise ValueError(f"{path} is a file; save_pretrained needs a directory")
        path.mkdir(parents=True, exist_ok=True)
        target = path / CONFIG_NAME
        target.write_text(self.to_json_string())
        return target

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **overrides: Any) -> XmodConfig:
        """Read ``config.json`` from a local directory or file, or a Hugging Face hub id."""
        from .loading import resolve_checkpoint_dir

        path = Path(name_or_path)
        if path.is_file():
            config_file = path
        else:
            config_file = resolve_checkpoint_dir(name_or_path, allow_patterns=[CONFIG_NAME]) / CONFIG_NAME
        if not config_file.is_file():
            raise FileNotFoundError(f"no {CONFIG_NAME} in {config_file.parent}")
        return cls.from_dict(json.loads(config_file.read_text()), **overrides)

    def copy(self) -> XmodConfig:
        return copy.deepcopy(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, XmodConfig) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"XmodConfig {self.to_json_string()}"
