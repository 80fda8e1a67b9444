"""Network policy for the Hugging Face hub: offline unless a gpu-profile params file opts in (`allow_hub: true`).

`import repro` already sets HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE / HF_DATASETS_OFFLINE to 1 unless the user set
them, so nothing reaches for the network by accident (tests, a notebook's first import). The notebooks' config
(repro.config.from_namespace, which repro.config.start calls) then applies the profile's policy with `apply`:
smoke and cpu are always offline; gpu goes online only with `allow_hub: true`. huggingface_hub and datasets read
the variables once at import, so `set_offline` also updates those modules when they are already imported.

`check_model_ref` turns a hub id that cannot be served offline into one clear error (transformers' own message
only says it "couldn't connect"); models.load_vlm and the LLM judges call it before from_pretrained.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


class HubOfflineError(OSError):
    """A hub id was asked for while the hub is offline (an OSError, as transformers' own loading errors)."""


def set_offline(offline: bool = True) -> None:
    """Set the three variables and the already-imported libraries' copies of them."""
    value = "1" if offline else "0"
    for var in OFFLINE_VARS:
        os.environ[var] = value
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_OFFLINE = offline
    ds_config = sys.modules.get("datasets.config")
    if ds_config is not None:
        ds_config.HF_HUB_OFFLINE = ds_config.HF_DATASETS_OFFLINE = offline


def default_offline() -> None:
    """Offline unless the user's environment already says otherwise (called on `import repro`)."""
    if all(var not in os.environ for var in OFFLINE_VARS):
        set_offline(True)


def is_offline() -> bool:
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        return bool(constants.HF_HUB_OFFLINE)
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def apply(profile: str, allow_hub: bool = False) -> bool:
    """The profile's policy: online only for gpu with allow_hub. Returns True when offline."""
    offline = not (profile == "gpu" and bool(allow_hub))
    set_offline(offline)
    return offline


def looks_like_hub_id(ref) -> bool:
    """"org/name" or "name" that is not an existing path and has no path syntax (./, /, ~, backslash)."""
    s = str(ref)
    return bool(_HUB_ID.fullmatch(s)) and not Path(s).exists()


def _cached(ref: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(ref, "config.json"), str)
    except Exception:  # an id the cache helper rejects is not cached
        return False


def check_model_ref(ref, what: str = "model") -> str:
    """`ref` as a string when it is a local path, or a hub id the current policy can serve (online, or already in
    the local hub cache); otherwise HubOfflineError in one line."""
    s = str(ref)
    if Path(s).exists() or not looks_like_hub_id(s):
        return s  # a path (a missing one fails in from_pretrained with its own message)
    if is_offline() and not _cached(s):
        raise HubOfflineError(f"{what} {s!r} is not a local folder and the hub is offline (HF_HUB_OFFLINE=1): the "
                              "smoke and cpu profiles never use the network; give a local path, or in the gpu "
                              "profile set allow_hub: true in the params file")
    return s
