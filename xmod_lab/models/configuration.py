"""XmodConfig: transformers' ``PretrainedConfig`` for X-MOD, plus the xmod-lab research fields.

Every field and default of transformers' ``XmodConfig`` is here, so both classes read and write the
same ``config.json``. The extra fields (``adapter_layers``, ``adapter_activation``, ``adapter_mode``,
``position_embedding_type`` and a float ``adapter_reduction_factor``) describe the released X-MOD at
their defaults; otherwise transformers would build another model, so ``save_pretrained`` records
why in the file (``transformers_incompatibilities``) and warns.
"""

from __future__ import annotations

import copy
import logging
import warnings
from dataclasses import field
from typing import Any

from transformers import PretrainedConfig
from transformers.activations import ACT2FN

from xmod_lab.options import ADAPTER_MODES

logger = logging.getLogger(__name__)

# facebook/xmod-base and facebook/xmod-large-prenorm: the adapter order IS the lang_ids order.
XMOD_LANGUAGES_81: tuple[str, ...] = tuple(
    "en_XX id_ID vi_VN ru_RU fa_IR sv_SE ja_XX fr_XX de_DE ro_RO ko_KR hu_HU es_XX fi_FI uk_UA da_DK "
    "pt_XX no_XX th_TH pl_PL bg_BG nl_XX zh_CN he_IL el_GR it_IT sk_SK hr_HR tr_TR ar_AR cs_CZ lt_LT "
    "hi_IN zh_TW ca_ES ms_MY sl_SI lv_LV ta_IN bn_IN et_EE az_AZ sq_AL sr_RS kk_KZ ka_GE tl_XX ur_PK "
    "is_IS hy_AM ml_IN mk_MK be_BY la_VA te_IN eu_ES gl_ES mn_MN kn_IN ne_NP sw_KE si_LK mr_IN af_ZA "
    "gu_IN cy_GB eo_EO km_KH ky_KG uz_UZ ps_AF pa_IN ga_IE ha_NG am_ET lo_LA ku_TR so_SO my_MM or_IN "
    "sa_IN".split()
)


def _codes(text: str) -> tuple[str, ...]:
    return tuple(text.split())


# The adapter list (in index order) of every published X-MOD checkpoint family: the one copy in the code base.
# The controlled models of the paper's section 3 list their languages alphabetically.
PUBLISHED_LANGUAGES: dict[str, tuple[str, ...]] = {
    "facebook/xmod-base": XMOD_LANGUAGES_81,
    "facebook/xmod-large-prenorm": XMOD_LANGUAGES_81,
    "facebook/xmod-base-13": _codes(
        "ar_AR en_XX fi_FI fr_XX hi_IN id_ID ka_GE ko_KR ru_RU sw_KE ta_IN th_TH vi_VN"
    ),
    "facebook/xmod-base-30": _codes(
        "ar_AR cs_CZ en_XX eu_ES fi_FI fr_XX hi_IN hr_HR hu_HU hy_AM id_ID it_IT ka_GE ko_KR lt_LT ml_IN "
        "mn_MN ms_MY pl_PL ro_RO ru_RU si_LK sk_SK sq_AL sv_SE sw_KE ta_IN th_TH tl_XX vi_VN"
    ),
    "facebook/xmod-base-60": _codes(
        "af_ZA am_ET ar_AR be_BY bn_IN ca_ES cs_CZ cy_GB da_DK en_XX eo_EO et_EE eu_ES fa_IR fi_FI fr_XX "
        "ga_IE gl_ES gu_IN ha_NG hi_IN hr_HR hu_HU hy_AM id_ID is_IS it_IT ka_GE ko_KR ku_TR la_VA lt_LT "
        "lv_LV mk_MK ml_IN mn_MN ms_MY ne_NP nl_XX no_XX pl_PL ps_AF pt_XX ro_RO ru_RU sa_IN sd_PK si_LK "
        "sk_SK sl_SI so_SO sq_AL sr_RS sv_SE sw_KE ta_IN te_IN th_TH tl_XX vi_VN"
    ),
    "facebook/xmod-base-75": _codes(
        "af_ZA am_ET ar_AR as_IN be_BY bn_IN br_FR bs_BA ca_ES cs_CZ cy_GB da_DK en_XX eo_EO et_EE eu_ES "
        "fa_IR fi_FI fr_XX fy_NL ga_IE gd_GB gl_ES gu_IN ha_NG hi_IN hr_HR hu_HU hy_AM id_ID is_IS it_IT "
        "jv_ID ka_GE kn_IN ko_KR ku_TR la_VA lt_LT lv_LV mg_MG mk_MK ml_IN mn_MN mr_IN ms_MY ne_NP nl_XX "
        "no_XX om_KE or_IN pa_IN pl_PL ps_AF pt_XX ro_RO ru_RU sa_IN sd_PK si_LK sk_SK sl_SI so_SO sq_AL "
        "sr_RS su_ID sv_SE sw_KE ta_IN te_IN th_TH tl_XX vi_VN xh_ZA yi_DE"
    ),
}

ATTN_IMPLEMENTATIONS = ("sdpa", "eager")
SKIP_PADDING_MODES = ("auto", "always", "never")
POSITION_EMBEDDING_TYPES = ("absolute", "relative_key", "relative_key_query")
PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")
SHARED_ADAPTER = "shared"  # adapter_modules key used by adapter_mode="shared"
TRANSFORMERS_NOTE_KEY = "xmod_lab_transformers_incompatible"
# Computed from other fields, never stored; a file's copy is ignored.
_DERIVED = ("head_dim", "adapter_bottleneck_size", "adapter_layer_ids", "adapter_keys")


class XmodConfig(PretrainedConfig):
    """Configuration of an X-MOD model (same fields, defaults and ``config.json`` as transformers')."""

    model_type = "xmod"

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int | None = 1
    bos_token_id: int | None = 0
    eos_token_id: int | None = 2
    use_cache: bool = True
    classifier_dropout: float | None = None
    pre_norm: bool = False
    adapter_reduction_factor: int | float = 2
    adapter_layer_norm: bool = False
    adapter_reuse_layer_norm: bool = True
    ln_before_adapter: bool = True
    languages: list[str] | tuple[str, ...] = ("en_XX",)
    default_language: str | None = None
    is_decoder: bool = False
    add_cross_attention: bool = False
    tie_word_embeddings: bool = True
    # xmod-lab research fields
    position_embedding_type: str = "absolute"
    adapter_layers: list[int] | None = None
    adapter_activation: str | None = None
    adapter_mode: str = "modular"
    pruned_heads: dict[int, list[int]] = field(default_factory=dict)  # prune_heads() fills it
    # Run token-wise work on real tokens only (models/padding.py): "auto" (when enough is padding),
    # "always" or "never". Same numbers at every real position either way.
    skip_padding: str = "auto"

    def __post_init__(self, **kwargs: Any) -> None:
        for key in _DERIVED:
            if key in kwargs:
                logger.info("config key %r is derived from other fields; ignoring the stored value", key)
                kwargs.pop(key)
        if "num_labels" in kwargs and kwargs["num_labels"] is None:  # "use the default" / "from id2label"
            kwargs.pop("num_labels")
        num_labels = kwargs.get("num_labels")
        if self.id2label is not None and num_labels is not None and num_labels != len(self.id2label):
            raise ValueError(
                f"num_labels={num_labels} disagrees with id2label ({len(self.id2label)} entries); pass one of them"
            )
        self.languages = [str(code) for code in self.languages]
        if self.adapter_layers is not None:
            self.adapter_layers = sorted(int(i) for i in self.adapter_layers)
        # JSON keys are strings; heads are numbered as in the unpruned layer.
        self.pruned_heads = {int(k): sorted(int(h) for h in v) for k, v in (self.pruned_heads or {}).items()}
        super().__post_init__(**kwargs)
        if self.label2id is None and self.id2label is not None:
            self.label2id = {v: k for k, v in self.id2label.items()}
        self.label2id = {str(k): int(v) for k, v in (self.label2id or {}).items()}
        self.check()

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any) -> XmodConfig:
        """transformers' from_dict; a ``num_labels`` override unlike the file's labels replaces them
        (a fresh classifier on a pre-trained encoder) instead of being overruled by them."""
        stored = config_dict.get("id2label") or {}
        if kwargs.get("num_labels") is not None and "id2label" not in kwargs and len(stored) != kwargs["num_labels"]:
            config_dict = {k: v for k, v in config_dict.items() if k not in ("id2label", "label2id")}
        return super().from_dict(config_dict, **kwargs)

    def copy(self) -> XmodConfig:
        return copy.deepcopy(self)

    def __eq__(self, other: object) -> bool:
        # Same model description, whichever transformers version wrote the file it came from.
        return isinstance(other, XmodConfig) and self.to_dict() == other.to_dict()

    # ---------------------------------------------------------- derived sizes
    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def attn_implementation(self) -> str:
        """"sdpa" (default) or "eager": set with ``from_pretrained(..., attn_implementation=...)``,
        ``model.set_attn_implementation(...)`` or by assigning it (None = the default)."""
        return self._attn_implementation or "sdpa"

    @attn_implementation.setter
    def attn_implementation(self, value: str | None) -> None:
        # transformers' config keeps an assigned value as an inert attribute until the next load; here
        # it switches the model's attention at once (layers read it at every call). Same outputs.
        if value is not None:
            _check_choice("attn_implementation", value, ATTN_IMPLEMENTATIONS)
        self._attn_implementation = value

    @property
    def adapter_bottleneck_size(self) -> int:
        """R = max(1, round(hidden_size / factor)); a whole-number factor floors instead, exactly like
        transformers (``hidden_size // factor``), so its checkpoints of any size load."""
        factor = self.adapter_reduction_factor
        if isinstance(factor, int) or float(factor).is_integer():
            return max(1, self.hidden_size // int(factor))
        return max(1, round(self.hidden_size / factor))

    @property
    def adapter_layer_ids(self) -> list[int]:
        """Indices of the layers that hold language adapters (none when adapter_mode="none")."""
        if self.adapter_mode == "none":
            return []
        return list(range(self.num_hidden_layers)) if self.adapter_layers is None else list(self.adapter_layers)

    @property
    def adapter_keys(self) -> list[str]:
        """The keys of every layer's ``adapter_modules``."""
        return {"shared": [SHARED_ADAPTER], "none": []}.get(self.adapter_mode, list(self.languages))

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
    def check(self) -> None:
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
            raise ValueError(f"default_language {self.default_language!r} is not in languages {self.languages}")
        factor = self.adapter_reduction_factor
        if isinstance(factor, bool) or not isinstance(factor, int | float) or factor <= 0:
            raise ValueError(f"adapter_reduction_factor must be a positive number, got {factor!r}")
        for name in ("hidden_act", "adapter_activation"):
            act = getattr(self, name)
            if act is not None and not callable(act) and act not in ACT2FN:
                raise ValueError(f"{name}={act!r} is not an activation; choose one of {sorted(ACT2FN)}")
        choices = (
            ("adapter_mode", self.adapter_mode, ADAPTER_MODES),
            ("attn_implementation", self.attn_implementation, ATTN_IMPLEMENTATIONS),
            ("skip_padding", self.skip_padding, SKIP_PADDING_MODES),
            ("position_embedding_type", self.position_embedding_type, POSITION_EMBEDDING_TYPES),
        )
        for name, value, allowed in choices:
            _check_choice(name, value, allowed)
        if self.problem_type is not None and self.problem_type not in PROBLEM_TYPES:
            raise ValueError(f"problem_type must be one of {PROBLEM_TYPES} or None, got {self.problem_type!r}")
        if self.adapter_layers is not None:
            bad = [i for i in self.adapter_layers if not 0 <= i < self.num_hidden_layers]
            if bad:
                raise ValueError(f"adapter_layers {bad} out of range: layers are 0..{self.num_hidden_layers - 1}")
        if self.add_cross_attention and not self.is_decoder:
            raise ValueError("add_cross_attention=True needs is_decoder=True")


def _check_choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


def transformers_incompatibilities(config: XmodConfig) -> list[str]:
    """Why transformers' ``XmodModel`` would NOT rebuild this config faithfully ([] = it would).

    transformers ignores our extra config fields, so at their defaults our files load there
    unchanged. Otherwise it builds a different model without an error, or crashes; each reason
    names the field, what transformers would do, and the value that is compatible.
    """
    reasons = []
    factor = config.adapter_reduction_factor
    if isinstance(factor, float):
        fix = f"use the int {int(factor)}" if float(factor).is_integer() else "use an integer factor"
        reasons.append(
            f"adapter_reduction_factor={factor!r} is a float: transformers' XmodAdapter builds "
            f"nn.Linear(hidden_size, hidden_size // factor) and fails on a float size ({fix})"
        )
    mode = config.adapter_mode
    if mode == "shared":
        reasons.append(
            "adapter_mode='shared': transformers builds one adapter per language and finds no weights for "
            "them (ours are under adapter_modules.shared), so it would initialise them randomly"
        )
    elif mode == "none":
        reasons.append(
            "adapter_mode='none': transformers always adds language adapters and would initialise them randomly"
        )
    layers = config.adapter_layers
    if mode != "none" and layers is not None and list(layers) != list(range(config.num_hidden_layers)):
        reasons.append(
            f"adapter_layers={list(layers)}: transformers puts adapters in every layer and would initialise the "
            "missing ones randomly (null adapter_layers = all layers is compatible)"
        )
    activation = config.adapter_activation
    if mode != "none" and activation is not None and activation != config.hidden_act:
        reasons.append(
            f"adapter_activation={activation!r}: transformers' adapters always use hidden_act={config.hidden_act!r}, "
            "so it would run a different model without any error"
        )
    if config.pruned_heads:
        reasons.append(
            f"pruned_heads={config.pruned_heads}: transformers 5 cannot prune heads, so its attention "
            "layers would not fit these weights"
        )
    return reasons


def note_transformers_incompatibilities(config: XmodConfig) -> list[str]:
    """Record (under TRANSFORMERS_NOTE_KEY) and warn why transformers could not load this config."""
    reasons = transformers_incompatibilities(config)
    config.__dict__.pop(TRANSFORMERS_NOTE_KEY, None)
    if reasons:
        setattr(config, TRANSFORMERS_NOTE_KEY, reasons)
        warnings.warn(
            "this X-MOD config uses xmod-lab ablation fields that transformers cannot load: "
            + "; ".join(reasons)
            + f". Load these files with xmod_lab.models; config.json records the reasons under "
            f"{TRANSFORMERS_NOTE_KEY!r}.",
            UserWarning,
            stacklevel=3,
        )
    return reasons
