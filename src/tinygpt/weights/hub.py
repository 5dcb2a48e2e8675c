"""Any model on the Hugging Face Hub by its name ("Qwen/Qwen3-0.6B", "meta-llama/Llama-3.2-1B-Instruct").

`download_model(repo_id)` fetches, into `$TINYGPT_HOME/models/<owner>/<name>/`, the files
`load_pretrained` and the tokenizers read: config.json, the weights (model.safetensors, or
model.safetensors.index.json and every shard it lists), and the tokenizer and generation files
the repository has (tokenizer.json, tokenizer_config.json, generation_config.json, Meta's
original/tokenizer.model). Once a download is complete a small manifest records its files, and
later calls find them there without the network (offline once cached).

How each file is fetched, as the Hub's own client does it: a HEAD request on its resolve URL,
not following the redirect. A large (LFS) file answers with a redirect to its content server
and announces its sha256 and size (`X-Linked-Etag`, `X-Linked-Size`): the bytes then come from
the redirect's URL through `tinygpt.data.download.download_file` (resumable, checked against
both). A small file answers 200 with its git blob id as ETag: it is read whole (bounded) and
checked against that id. A token in `$HF_TOKEN` goes with the requests to the Hub as a bearer
token (gated repositories such as Meta's); the content server's URL is signed and gets none.
"""
import hashlib
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from http.client import HTTPException
from pathlib import Path

from ..data.download import ChecksumError, DownloadError, cache_home, download_file
from ..errors import InputError
from ..files import atomic_write
from .claims import read_json_config, shard_names
from .download import hf_endpoint, hub_head, linked_file_info

MANIFEST = ".tinygpt-download.json"
SMALL_FILE_BYTES = 64 << 20  # a small (non-LFS) file in a model repository: configs, tokenizers
OPTIONAL_FILES = ("generation_config.json", "tokenizer.json", "tokenizer_config.json",
                  "original/tokenizer.model")
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


class AccessRefusedError(DownloadError):
    """The Hub refused access (HTTP 401/403): a gated or private repository, or a bad token."""


def is_repo_id(name) -> bool:
    """True for an "owner/name" Hub repository id."""
    return isinstance(name, str) and bool(_REPO_ID.fullmatch(name)) and ".." not in name


def model_dir(repo_id: str, cache_dir=None) -> Path:
    """Where `download_model(repo_id)` puts (or finds) the model's files."""
    if not is_repo_id(repo_id):
        raise InputError(f"{repo_id!r} is not a Hugging Face repository id (owner/name)")
    return Path(cache_dir or cache_home()).expanduser() / "models" / repo_id


def cached_model(repo_id: str, cache_dir=None) -> Path | None:
    """The model's directory if a complete download of it is there (every file of its
    manifest present), else None."""
    target = model_dir(repo_id, cache_dir)
    try:
        files = json.loads((target / MANIFEST).read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return target if all((target / f).is_file() for f in files) else None


def download_model(repo_id: str, cache_dir=None, endpoint: str = None, revision: str = "main",
                   progress: bool = True, force: bool = False, timeout: float = 30.0,
                   **options) -> Path:
    """Fetch model `repo_id` from the Hub once (`force=True`: again) and return its directory.
    Raises AccessRefusedError (401/403) naming the repository and what to do, DownloadError
    when a file cannot be fetched, ChecksumError when one is not the file the Hub announced."""
    if not force and (found := cached_model(repo_id, cache_dir)) is not None:
        return found
    hub = _Hub(repo_id, hf_endpoint(endpoint), revision, timeout)
    target = model_dir(repo_id, cache_dir)
    fetch = dict(target=target, progress=progress, force=force, options=options)
    files = [hub.fetch("config.json", **fetch)]
    index = hub.fetch("model.safetensors.index.json", optional=True, **fetch)
    if index is not None:
        files += [index] + [hub.fetch(shard, **fetch) for shard in _shards(target / index)]
    else:
        files.append(hub.fetch("model.safetensors", **fetch))
    files += [f for name in OPTIONAL_FILES if (f := hub.fetch(name, optional=True, **fetch))]
    with atomic_write(target / MANIFEST, "w", encoding="utf-8") as f:
        json.dump({"repo_id": repo_id, "revision": revision, "files": files}, f, indent=1)
    return target


def _shards(index: Path) -> list:
    """The shard files an index lists, each a plain name beside it."""
    try:
        return shard_names(read_json_config(index).get("weight_map"), index)
    except InputError as e:
        raise DownloadError(f"{e}; delete it or download again with force=True (tinygpt "
                            f"download --force)") from None


class _Hub:
    """Requests to one repository at one revision."""

    def __init__(self, repo_id, endpoint, revision, timeout):
        self.repo_id, self.endpoint, self.timeout = repo_id, endpoint, timeout
        self.base = f"{endpoint}/{repo_id}/resolve/{urllib.parse.quote(revision, safe='')}/"
        self.token = os.environ.get("HF_TOKEN") or None

    def headers(self) -> dict:
        headers = {"User-Agent": "tinygpt", "Accept-Encoding": "identity"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def fetch(self, name, *, target, progress, force, options, optional=False):
        """Download file `name` into `target` (unless there and not `force`); returns `name`,
        or None when `optional` and the repository has no such file."""
        url = self.base + name
        dest = target / name
        url, status, headers = self._resolve(url)
        if status == 404 and optional:
            return None
        if status in (401, 403):
            raise AccessRefusedError(self._refused(status))
        if status == 404:
            raise DownloadError(f"{url} answered HTTP 404: {self.repo_id} has no {name} (is "
                                f"{self.repo_id!r} the model's repository?)")
        sha256, size = linked_file_info(headers)
        if 300 <= status < 400 and headers.get("Location"):   # a large file: checked download
            if sha256 is None or size is None:
                raise DownloadError(f"{url}: the Hub announced no sha256 and size for {name}, "
                                    f"so its download could not be checked")
            download_file(urllib.parse.urljoin(url, headers["Location"]), dest, sha256, size,
                          progress=progress, force=force, timeout=self.timeout,
                          desc=f"{self.repo_id} {name}", **options)
        elif status == 200:
            if force or not dest.is_file():
                self._small_file(url, dest, headers.get("ETag") or "")
        else:
            raise DownloadError(f"{url} answered HTTP {status}")
        return name

    def _resolve(self, url, hops: int = 5):
        """(url, status, headers) of a HEAD request, following the Hub's own redirects (a
        renamed repository) but not the one to the content server (it carries X-Linked-Etag)."""
        for _ in range(hops):
            status, headers = self._head(url)
            if not (300 <= status < 400 and headers.get("Location")) or headers.get("X-Linked-Etag"):
                break
            url = urllib.parse.urljoin(url, headers["Location"])
        return url, status, headers

    def _head(self, url):
        return hub_head(url, self.headers(), self.timeout, hint="; a model downloaded before "
                        "loads offline from its folder in the cache")

    def _small_file(self, url, dest: Path, etag: str) -> None:
        """GET a small file whole and check it against the git blob id the Hub gives as ETag."""
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=self.headers()),
                                        timeout=self.timeout) as resp:
                data = resp.read(SMALL_FILE_BYTES + 1)
        except urllib.error.HTTPError as e:
            if e.code in (401, 403):
                raise AccessRefusedError(self._refused(e.code)) from None
            raise DownloadError(f"{url} answered HTTP {e.code} {e.reason}") from None
        except (urllib.error.URLError, OSError, HTTPException) as e:
            raise DownloadError(f"could not download {url}: {getattr(e, 'reason', e)}") from None
        if len(data) > SMALL_FILE_BYTES:
            raise ChecksumError(f"{url} sent more than {SMALL_FILE_BYTES:,} bytes for a small file")
        etag = etag.removeprefix("W/").strip('"').lower()
        blob_id = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        if re.fullmatch(r"[0-9a-f]{40}", etag) and blob_id != etag:
            raise ChecksumError(f"the file downloaded from {url} has git blob id {blob_id}, the "
                                f"Hub announced {etag}; nothing was saved. Try again.")
        dest.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(dest, "wb") as f:
            f.write(data)

    def _refused(self, status: int) -> str:
        page = f"{self.endpoint}/{self.repo_id}"
        if self.token:
            return (f"the Hub refused access to {self.repo_id} (HTTP {status}) with the token in "
                    f"HF_TOKEN: accept the model's license on {page} with the account that token "
                    f"belongs to (a gated model), or check that the token is valid and can read "
                    f"the repository")
        return (f"the Hub refused access to {self.repo_id} (HTTP {status}): it is gated or private "
                f"(or no such repository exists). Accept its license on {page}, create an access "
                f"token at {hf_endpoint()}/settings/tokens and set HF_TOKEN to it, then run again")
