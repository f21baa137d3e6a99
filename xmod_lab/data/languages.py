"""Dataset language codes -> X-MOD adapter codes -> indices into the model's language list.

Datasets name languages their own way (`de`, `zh-Hant`, `PAN-X.de`'s `de`, UD's `German`); X-MOD names
adapters `de_DE`, `zh_TW`. The map between the two is configuration (``language_map`` overrides or extends
:data:`DEFAULT_LANGUAGE_MAP`); the index of an adapter always comes from the model's own ``languages`` list,
because the order is checkpoint-specific.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

# ISO 639-1 prefix -> X-MOD code for every adapter of the released checkpoints (81 + the extras of the
# controlled 60/75-language models). Chinese defaults to simplified (zh_CN), as XNLI/MLQA/PAWS-X `zh` are.
_ISO_TO_XMOD = {
    code.split("_")[0]: code
    for code in (
        "en_XX id_ID vi_VN ru_RU fa_IR sv_SE ja_XX fr_XX de_DE ro_RO ko_KR hu_HU es_XX fi_FI uk_UA da_DK "
        "pt_XX no_XX th_TH pl_PL bg_BG nl_XX zh_CN he_IL el_GR it_IT sk_SK hr_HR tr_TR ar_AR cs_CZ lt_LT "
        "hi_IN ca_ES ms_MY sl_SI lv_LV ta_IN bn_IN et_EE az_AZ sq_AL sr_RS kk_KZ ka_GE tl_XX ur_PK is_IS "
        "hy_AM ml_IN mk_MK be_BY la_VA te_IN eu_ES gl_ES mn_MN kn_IN ne_NP sw_KE si_LK mr_IN af_ZA gu_IN "
        "cy_GB eo_EO km_KH ky_KG uz_UZ ps_AF pa_IN ga_IE ha_NG am_ET lo_LA ku_TR so_SO my_MM or_IN sa_IN "
        "sd_PK as_IN br_FR bs_BA fy_NL gd_GB jv_ID mg_MG om_KE su_ID xh_ZA yi_DE"
    ).split()
}

# Aliases seen in XTREME-family datasets: script/region variants, old ISO codes, romanised corpora
# (fairseq maps `hi_rom` to the Hindi adapter), and the language names that UD-POS configs use.
_ALIASES = {
    "zh-Hans": "zh_CN", "zh-CN": "zh_CN", "zh-cn": "zh_CN", "zh_Hans": "zh_CN",
    "zh-Hant": "zh_TW", "zh-TW": "zh_TW", "zh-tw": "zh_TW", "zh_Hant": "zh_TW",
    "nb": "no_XX", "nn": "no_XX", "iw": "he_IL", "in": "id_ID", "fil": "tl_XX",
    "hi_rom": "hi_IN", "ur_rom": "ur_PK", "bn_rom": "bn_IN", "ta_rom": "ta_IN", "te_rom": "te_IN",
    "Afrikaans": "af_ZA", "Arabic": "ar_AR", "Basque": "eu_ES", "Bulgarian": "bg_BG", "Chinese": "zh_CN",
    "Dutch": "nl_XX", "English": "en_XX", "Estonian": "et_EE", "Finnish": "fi_FI", "French": "fr_XX",
    "German": "de_DE", "Greek": "el_GR", "Hebrew": "he_IL", "Hindi": "hi_IN", "Hungarian": "hu_HU",
    "Indonesian": "id_ID", "Italian": "it_IT", "Japanese": "ja_XX", "Kazakh": "kk_KZ", "Korean": "ko_KR",
    "Marathi": "mr_IN", "Persian": "fa_IR", "Portuguese": "pt_XX", "Russian": "ru_RU", "Spanish": "es_XX",
    "Tagalog": "tl_XX", "Tamil": "ta_IN", "Telugu": "te_IN", "Thai": "th_TH", "Turkish": "tr_TR",
    "Urdu": "ur_PK", "Vietnamese": "vi_VN",
    # TyDi QA names languages in its ids ("finnish-1438...-1")
    "arabic": "ar_AR", "bengali": "bn_IN", "english": "en_XX", "finnish": "fi_FI", "indonesian": "id_ID",
    "japanese": "ja_XX", "korean": "ko_KR", "russian": "ru_RU", "swahili": "sw_KE", "telugu": "te_IN",
    "thai": "th_TH",
}  # fmt: skip

DEFAULT_LANGUAGE_MAP: dict[str, str] = {**_ISO_TO_XMOD, **_ALIASES}

_XMOD_CODE = re.compile(r"^[a-z]{2,3}_[A-Z]{2}$")


def to_xmod_language(code: str, language_map: Mapping[str, str] | None = None) -> str:
    """The X-MOD adapter code for a dataset language code (``language_map`` entries win over the default)."""
    if language_map and code in language_map:
        return str(language_map[code])
    if code in DEFAULT_LANGUAGE_MAP:
        return DEFAULT_LANGUAGE_MAP[code]
    if _XMOD_CODE.match(code):  # already an adapter code such as `rm_CH`
        return code
    raise ValueError(
        f"No X-MOD language code for dataset language {code!r}. Add it to the datamodule's `language_map`, "
        f"e.g. language_map: {{{code}: xx_XX}}, using a code from the model's `languages`."
    )


def language_ids(codes: Sequence[str], languages: Sequence[str], *, role: str = "data") -> list[int]:
    """Indices of X-MOD ``codes`` in the model's ``languages``; a clear error for any without an adapter."""
    index = {lang: i for i, lang in enumerate(languages)}
    missing = [c for c in codes if c not in index]
    if missing:
        raise ValueError(
            f"{role} language(s) {missing} have no adapter in the model, whose languages are {list(languages)}. "
            "Drop them from the datamodule's languages, map them to an existing adapter with `language_map`, "
            "or add an adapter first (model.add_language(code, init_from=...))."
        )
    return [index[c] for c in codes]
