"""Downloads from the Hugging Face Hub (or a mirror) with huggingface_hub, errors in one line.

Everything goes through the library's own cache (HF_HOME / HF_HUB_CACHE), so files other tools
fetched are reused and `HF_HUB_OFFLINE=1` works from it. The environment (HF_ENDPOINT, HF_TOKEN,
HF_HUB_OFFLINE) is read at call time and passed explicitly, whatever it was at import time.
A connection dropped mid-file is resumed by the library with a Range request."""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edgellm.errors import EdgeLLMError

DEFAULT_ENDPOINT = "https://huggingface.co"
_TRUE = {"1", "true", "yes", "on"}

# What a conversion reads besides the weights: configs, tokenizers (SentencePiece, BPE, tiktoken).
CHECKPOINT_SIDE_FILES = (
    "config.json",
    "generation_config.json",
    "params.json",
    "tokenizer.model",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "*.tiktoken",
    "*.index.json",
)
# Weight formats by preference: only one is downloaded (Llama-2 repos carry two full copies).
WEIGHT_FORMATS = (("*.safetensors",), ("pytorch_model*.bin",), ("consolidated.*.pth",))


class HubError(EdgeLLMError):
    """The Hub (or the network) refused; the message says which and what to do."""


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def offline() -> bool:
    return (os.environ.get("HF_HUB_OFFLINE") or "").strip().lower() in _TRUE


def _token() -> str | None:
    """HF_TOKEN if set; else None, and huggingface_hub uses the token saved by `hf auth login`."""
    return os.environ.get("HF_TOKEN") or None


@contextmanager
def explained(repo: str, filename: str | None = None) -> Iterator[None]:
    """Turn huggingface_hub's and httpx's exceptions into one line naming the repo and the fix."""
    import httpx2
    from huggingface_hub import errors

    what = f"{repo}/{filename}" if filename else repo
    url = f"{endpoint()}/{repo}"
    try:
        yield
    except errors.GatedRepoError:
        token = "HF_TOKEN is set but its account has not been granted access" if _token() else "no HF_TOKEN is set"
        raise HubError(
            f"{repo} is gated ({token}): accept its licence at {url} while logged in, then "
            "set HF_TOKEN to a token of that account (https://huggingface.co/settings/tokens)"
        ) from None
    except errors.RepositoryNotFoundError:
        raise HubError(f"{repo}: no such repository on {endpoint()} (or it is private: set HF_TOKEN)") from None
    except errors.RevisionNotFoundError:
        raise HubError(f"{repo}: no such revision on {endpoint()}") from None
    except errors.RemoteEntryNotFoundError:
        raise HubError(f"{what}: no such file in the repository on {endpoint()}") from None
    except errors.LocalEntryNotFoundError as err:
        if offline():
            raise HubError(
                f"{what} is not in the Hugging Face cache and HF_HUB_OFFLINE is set: unset it to download"
            ) from None
        raise HubError(f"cannot reach {endpoint()} to download {what}: {_cause(err)}") from None
    except (httpx2.TransportError, errors.OfflineModeIsEnabled) as err:
        raise HubError(f"cannot reach {endpoint()} to download {what}: {_cause(err)}") from None
    except errors.HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else "?"
        raise HubError(f"{endpoint()} answered HTTP {status} for {what}; try again later") from None
    except OSError as err:  # disk full, size mismatch after retries, permissions
        raise HubError(f"download of {what} failed: {err.strerror or str(err).splitlines()[0]}") from None


def _cause(err: BaseException) -> str:
    """The innermost reason, in one line: 'connection refused', 'timed out', ..."""
    while err.__cause__ is not None:
        err = err.__cause__
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return f"{text} (check the network, HF_ENDPOINT or a proxy; HF_HUB_OFFLINE=1 uses cached files)"


def repo_files(repo: str) -> dict[str, int]:
    """File name -> size of the repo's files (one API call)."""
    from huggingface_hub import HfApi

    with explained(repo):
        info = HfApi(endpoint=endpoint(), token=_token()).model_info(repo, files_metadata=True)
    return {s.rfilename: int(s.size or 0) for s in info.siblings or []}


def checkpoint_patterns(files: dict[str, int] | None) -> list[str]:
    """allow_patterns for a conversion: the side files and ONE weight format (the first present).
    Without a listing (offline) every format is allowed: the cache holds what it holds."""
    formats = [f for fmt in WEIGHT_FORMATS for f in fmt]
    if files is not None:
        top = [name for name in files if "/" not in name]
        present = [fmt for fmt in WEIGHT_FORMATS if any(fnmatch.fnmatch(n, p) for n in top for p in fmt)]
        if not present:
            raise EdgeLLMError("the repository has no weights edgellm can convert (safetensors, .bin or .pth)")
        formats = list(present[0])
    return [*CHECKPOINT_SIDE_FILES, *formats]


def selected(files: dict[str, int], patterns: list[str]) -> dict[str, int]:
    return {n: s for n, s in files.items() if "/" not in n and any(fnmatch.fnmatch(n, p) for p in patterns)}


def download_file(repo: str, filename: str) -> Path:
    """One file, through the Hub cache; its path there."""
    from huggingface_hub import hf_hub_download

    with explained(repo, filename):
        return Path(hf_hub_download(repo, filename, endpoint=endpoint(), token=_token(), local_files_only=offline()))


def download_snapshot(repo: str, patterns: list[str]) -> Path:
    """The files matching ``patterns``, through the Hub cache; the snapshot folder."""
    from huggingface_hub import snapshot_download

    with explained(repo):
        return Path(
            snapshot_download(
                repo,
                allow_patterns=patterns,
                endpoint=endpoint(),
                token=_token(),
                local_files_only=offline(),
                max_workers=4,
            )
        )


def cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def commit_of(path: Path) -> str | None:
    """The commit a Hub cache file belongs to (`.../snapshots/<sha>/file`)."""
    for part in reversed(path.parts):
        if re.fullmatch(r"[0-9a-f]{40}", part):
            return part
    return None
