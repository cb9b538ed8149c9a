"""Downloads from the Hugging Face Hub (or a mirror) with huggingface_hub, errors in one line.

Checkpoints go through the library's own cache (HF_HOME / HF_HUB_CACHE), so files other tools
fetched are reused and `HF_HUB_OFFLINE=1` works from it. A single large GGUF is taken from that
cache when it is there, else downloaded by the library's HTTP client into a `.part` file of ours
that survives Ctrl-C: the next pull resumes it with a Range request (huggingface_hub >= 1.0 only
resumes within one process), and its SHA-256 is checked against the Hub's before use.
The environment (HF_ENDPOINT, HF_TOKEN, HF_HUB_OFFLINE) is read at call time and passed
explicitly, whatever it was when huggingface_hub was imported."""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

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


def cached_file(repo: str, filename: str) -> Path | None:
    """The file if the Hugging Face cache already holds it (any tool may have fetched it)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, filename)
    return Path(found) if isinstance(found, str) else None


def download_resumable(repo: str, filename: str, folder: Path) -> tuple[Path, str | None]:
    """One file into ``folder``/<etag>.part, resuming what an earlier, interrupted pull left there;
    checked against the Hub's SHA-256 (LFS files). Returns the finished file (for the caller to
    move) and the commit it belongs to."""
    from filelock import FileLock, Timeout
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers

    url = hf_hub_url(repo, filename, endpoint=endpoint())
    with explained(repo, filename):
        meta = get_hf_file_metadata(url, token=_token(), endpoint=endpoint())
        if not meta.etag or meta.size is None:
            raise HubError(f"{endpoint()} gave no ETag or size for {repo}/{filename}: is HF_ENDPOINT a Hub mirror?")
        folder.mkdir(parents=True, exist_ok=True)
        part = folder / f"{re.sub(r'[^0-9a-zA-Z_-]', '_', meta.etag)}.part"
        try:
            with FileLock(f"{part}.lock", timeout=0):
                have = part.stat().st_size if part.exists() else 0
                if have > meta.size:  # not a prefix of this file: start again
                    part.unlink()
                    have = 0
                headers = build_hf_headers(token=_token())
                if urlsplit(meta.location).netloc != urlsplit(url).netloc:
                    headers.pop("authorization", None)  # a CDN's signed URL: the token stays with the Hub
                if have:
                    print(f"resuming {filename} at {have / meta.size:.0%}")
                with open(part, "ab") as fh:
                    http_get(meta.location, fh, resume_size=have, headers=headers, expected_size=meta.size,
                             displayed_filename=filename)  # fmt: skip
        except Timeout:
            raise HubError(f"another edgellm pull is downloading {repo}/{filename}; wait for it") from None
        Path(f"{part}.lock").unlink(missing_ok=True)
    _verify(part, meta.etag, f"{repo}/{filename}")
    return part, meta.commit_hash


def _verify(path: Path, etag: str, what: str) -> None:
    """LFS ETags are the file's SHA-256: a resumed file must hash to it (else it is discarded)."""
    if not re.fullmatch(r"[0-9a-f]{64}", etag):
        return
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 24):
            digest.update(chunk)
    if digest.hexdigest() != etag:
        path.unlink()
        raise HubError(f"{what}: the download does not match the Hub's SHA-256; run the pull again")


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
