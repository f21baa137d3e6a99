"""X-MOD in plain PyTorch: the transformers v4.37.2 API, without subclassing transformers.

configuration.py  XmodConfig (transformers' config.json, plus ablation fields), XMOD_LANGUAGES_81
modeling.py       the layer maths and the once-per-forward language routing
heads.py          XmodPreTrainedModel, XmodModel and the six task heads (forward + losses)
outputs.py        HF-style output dataclasses (attribute, key and index access, to_tuple)
generation.py     XmodForCausalLM.generate with the KV cache
loading.py        from_pretrained/save_pretrained: local dirs, hub ids, hub-file quirks
adapters.py, freezing.py, adapter_files.py, fairseq.py: languages after pre-training, freezing
policies, per-language adapter files, fairseq checkpoint conversion.
"""

from .configuration import XMOD_LANGUAGES_81, XmodConfig
from .heads import (
    XmodForCausalLM,
    XmodForMaskedLM,
    XmodForMultipleChoice,
    XmodForQuestionAnswering,
    XmodForSequenceClassification,
    XmodForTokenClassification,
    XmodModel,
    XmodPreTrainedModel,
)

__all__ = [
    "XMOD_LANGUAGES_81",
    "XmodConfig",
    "XmodForCausalLM",
    "XmodForMaskedLM",
    "XmodForMultipleChoice",
    "XmodForQuestionAnswering",
    "XmodForSequenceClassification",
    "XmodForTokenClassification",
    "XmodModel",
    "XmodPreTrainedModel",
]
