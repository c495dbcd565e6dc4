"""Reaching the Hugging Face Hub, or knowing quickly that it cannot be reached.

``huggingface_hub`` retries a failed request five times with backoff, so a machine
without network waits most of a minute before learning that a model cannot be
downloaded, and the cached copy of a model is only used after those retries. One short
connection attempt decides instead: without it, downloads run from the local cache only
and fail at once with the caller's message. The hub library's log lines are also kept
from printing twice (its own handler, and the application's through propagation).
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

PROBE_TIMEOUT_S = 3.0
_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY")


def hub_reachable(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the hub's endpoint opens within ``timeout`` seconds.

    Offline mode (``HF_HUB_OFFLINE``) answers no; behind a proxy the answer is yes (the
    proxy, not this machine, reaches the hub, so the download is left to try)."""
    from huggingface_hub import constants
    from huggingface_hub.utils import logging as hub_logging

    hub_logging.disable_propagation()
    if constants.HF_HUB_OFFLINE:
        return False
    if any(os.environ.get(name) for name in _PROXY_VARIABLES):
        return True
    url = urlsplit(constants.ENDPOINT)
    if not url.hostname:
        return True
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def unreachable_note() -> str:
    from huggingface_hub import constants

    return f"no network: cannot reach {constants.ENDPOINT}"
