"""The Hugging Face hub when it cannot be reached: one error naming what is missing and how to get it.

transformers, huggingface_hub and datasets each report "not cached, no network" differently (an OSError
about connecting, ``LocalEntryNotFoundError``, ``ConnectionError("Couldn't reach ...")``) and none of them
names the model or dataset; these helpers turn all of them into one ``OSError`` that does.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator

_UNREACHABLE = re.compile(
    r"couldn't connect to|couldn't reach|offline ?mode|outgoing traffic has been disabled|"
    r"not cached|Max retries exceeded|Failed to resolve|Temporary failure in name resolution",
    re.IGNORECASE,
)
_UNREACHABLE_TYPES = ("LocalEntryNotFoundError", "OfflineModeIsEnabled", "ConnectTimeout", "ConnectError")


def is_unreachable(err: BaseException) -> bool:
    """True when ``err`` (or an exception it came from) says the hub could not be reached for an uncached file."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if type(current).__name__ in _UNREACHABLE_TYPES or _UNREACHABLE.search(str(current)):
            return True
        current = current.__cause__ or current.__context__
    return False


def offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"))


@contextlib.contextmanager
def reaching(kind: str, hub_id: str, setting: str, detail: str = "") -> Iterator[None]:
    """Around a hub download of ``hub_id``: "not cached and no network" becomes one OSError naming it.

    ``kind``: "model", "tokenizer" or "dataset"; ``setting``: the config key that takes a local path instead;
    ``detail``: said after the id (`` (config 'sw')``)."""
    try:
        yield
    except Exception as err:
        if not is_unreachable(err):
            raise
        why = "offline mode is on (HF_HUB_OFFLINE=1)" if offline() else "the hub cannot be reached (offline?)"
        raise OSError(
            f"{kind} {hub_id!r}{detail} is not in the local Hugging Face cache and {why}: run once with network to cache it "
            f"(HF_HOME={os.environ.get('HF_HOME', '~/.cache/huggingface')}), or set {setting}=<a local copy>."
        ) from None
