"""Read and write bytes at a local path, an http(s):// URL or an s3:// URI.

One place for remote I/O, so the dataset loader, the trainer and the server all accept the same
kinds of locations. S3 goes through boto3 and therefore honours the standard AWS variables
(AWS_ACCESS_KEY_ID, AWS_PROFILE, AWS_REGION, ...) including AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3
for S3-compatible stores; MLFLOW_S3_ENDPOINT_URL is honoured too, since MLflow deployments set it.
"""

from __future__ import annotations

import io
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from distilqa.errors import DataError

_HTTP_TIMEOUT_S = 60.0


def is_remote(uri: str) -> bool:
    return uri.startswith(("s3://", "http://", "https://"))


def split_s3_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/key/parts` -> (`bucket`, `key/parts`)."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise DataError(f"{uri}: not an s3://bucket/key URI")
    return parsed.netloc, parsed.path.lstrip("/")


def s3_client():
    """A boto3 S3 client; the endpoint comes from the environment when one is set."""
    import boto3

    endpoint = (
        os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
        or os.environ.get("MLFLOW_S3_ENDPOINT_URL")
    )
    return boto3.client("s3", endpoint_url=endpoint or None)


def read_bytes(uri: str | os.PathLike[str]) -> bytes:
    """Return the whole content at `uri`; failures become a DataError naming the location."""
    uri = os.fspath(uri)
    if uri.startswith("s3://"):
        return _read_s3(uri)
    if uri.startswith(("http://", "https://")):
        return _read_http(uri)
    path = Path(uri)
    if not path.exists():
        raise DataError(f"{uri}: no such file")
    if path.is_dir():
        raise DataError(f"{uri}: is a directory, expected a file")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataError(f"{uri}: cannot read: {exc.strerror or exc}") from None


def write_bytes(uri: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to `uri` (local path or s3://), creating parent directories locally."""
    uri = os.fspath(uri)
    if uri.startswith("s3://"):
        bucket, key = split_s3_uri(uri)
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            s3_client().put_object(Bucket=bucket, Key=key, Body=data)
        except (BotoCoreError, ClientError) as exc:
            raise DataError(f"{uri}: cannot write: {exc}") from None
        return
    if is_remote(uri):
        raise DataError(f"{uri}: writing over http(s) is not supported")
    path = Path(uri)
    try:
        if path.exists() and not path.is_file():
            # /dev/null, /dev/stdout, a named pipe: write through. Renaming a temporary file over it
            # would replace the device itself (as root, /dev/null became a plain file once).
            with path.open("wb") as out:
                out.write(data)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".partial")
        tmp.write_bytes(data)
        tmp.replace(path)  # never leave a half-written file under the real name
    except OSError as exc:
        raise DataError(f"{uri}: cannot write: {exc.strerror or exc}") from None


def upload_file(path: str | os.PathLike[str], uri: str) -> None:
    """Copy a local file to a local path or an s3:// URI, streamed (multipart for large files)."""
    if not uri.startswith("s3://"):
        import shutil

        Path(uri).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, uri)
        return
    bucket, key = split_s3_uri(uri)
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        s3_client().upload_file(os.fspath(path), bucket, key)
    except (BotoCoreError, ClientError) as exc:
        raise _s3_error(uri, "write", exc) from None


def list_files(uri: str | os.PathLike[str]) -> list[str]:
    """Relative names of the files under a local directory or an s3:// prefix (empty if none)."""
    return sorted(list_sizes(uri))


def list_sizes(uri: str | os.PathLike[str]) -> dict[str, int]:
    """Relative name -> size in bytes of each file under a local directory or an s3:// prefix."""
    uri = os.fspath(uri)
    if uri.startswith("s3://"):
        bucket, prefix = split_s3_uri(uri)
        prefix = prefix.rstrip("/") + "/" if prefix else ""
        from botocore.exceptions import BotoCoreError, ClientError

        sizes = {}
        try:
            for page in s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    name = obj["Key"][len(prefix) :]
                    if name and not name.endswith("/"):
                        sizes[name] = int(obj["Size"])
        except (BotoCoreError, ClientError) as exc:
            raise _s3_error(uri, "list", exc) from None
        return dict(sorted(sizes.items()))
    root = Path(uri)
    if not root.is_dir():
        return {}
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*")) if p.is_file()}


def size_of(uri: str | os.PathLike[str]) -> int:
    """The size in bytes of one file or s3:// object (DataError when there is none)."""
    uri = os.fspath(uri)
    if uri.startswith("s3://"):
        bucket, key = split_s3_uri(uri)
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return int(s3_client().head_object(Bucket=bucket, Key=key)["ContentLength"])
        except (BotoCoreError, ClientError) as exc:
            raise _s3_error(uri, "read", exc) from None
    path = Path(uri)
    if not path.is_file():
        raise DataError(f"{uri}: no such file")
    return path.stat().st_size


def open_stream(uri: str | os.PathLike[str]) -> io.BufferedIOBase:
    """A file or an s3:// object as a buffered binary stream, read as it is consumed (never whole)."""
    uri = os.fspath(uri)
    if not uri.startswith("s3://"):
        try:
            return open(uri, "rb")  # noqa: SIM115 - the caller closes it
        except OSError as exc:
            raise DataError(f"{uri}: cannot read: {exc.strerror or exc}") from None
    bucket, key = split_s3_uri(uri)
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        body = s3_client().get_object(Bucket=bucket, Key=key)["Body"]
    except (BotoCoreError, ClientError) as exc:
        raise _s3_error(uri, "read", exc) from None
    return io.BufferedReader(_BodyReader(body), buffer_size=1 << 20)


class _BodyReader(io.RawIOBase):
    """botocore's StreamingBody as a raw stream, so the io module can buffer it and split lines."""

    def __init__(self, body: Any) -> None:
        self.body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        chunk = self.body.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)

    def close(self) -> None:
        self.body.close()
        super().close()


def _s3_error(uri: str, verb: str, exc: Exception) -> DataError:
    """A boto error as a DataError naming the location, with the common codes in words."""
    code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
    if code in ("NoSuchKey", "404", "NotFound"):
        return DataError(f"{uri}: no such object")
    if code == "NoSuchBucket":
        return DataError(f"{uri}: no such bucket")
    return DataError(f"{uri}: cannot {verb}: {code or exc}")


def remove_tree(uri: str | os.PathLike[str]) -> None:
    """Delete a local directory or every object under an s3:// prefix (nothing there: nothing to do)."""
    uri = os.fspath(uri)
    if not uri.startswith("s3://"):
        import shutil

        shutil.rmtree(uri, ignore_errors=True)
        return
    bucket, prefix = split_s3_uri(uri)
    client = s3_client()
    for name in list_files(uri):
        client.delete_object(Bucket=bucket, Key=f"{prefix.rstrip('/')}/{name}")


def cache_dir() -> Path:
    """Where remote models are unpacked: $DISTILQA_CACHE, else ~/.cache/distilqa."""
    return Path(os.environ.get("DISTILQA_CACHE") or Path.home() / ".cache" / "distilqa")


def download_prefix(uri: str, dest: str | os.PathLike[str] | None = None) -> Path:
    """Copy every object under an s3:// prefix into a local directory (a model directory, say).

    Objects already present with the same size are not downloaded again, so a restarted server
    does not fetch its model twice.
    """
    import hashlib

    bucket, prefix = split_s3_uri(uri)
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    target = Path(dest) if dest else cache_dir() / "s3" / hashlib.sha256(uri.encode()).hexdigest()[:16]
    from botocore.exceptions import BotoCoreError, ClientError

    client = s3_client()
    found = 0
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                relative = obj["Key"][len(prefix) :]
                if not relative or relative.endswith("/"):
                    continue
                if ".." in Path(relative).parts:
                    raise DataError(f"{uri}: refusing object key that leaves the prefix: {obj['Key']}")
                found += 1
                local = target / relative
                if local.exists() and local.stat().st_size == obj["Size"]:
                    continue
                local.parent.mkdir(parents=True, exist_ok=True)
                partial = local.with_name(local.name + ".partial")
                client.download_file(bucket, obj["Key"], str(partial))
                partial.replace(local)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        raise DataError(f"{uri}: cannot list or download: {code or exc}") from None
    except BotoCoreError as exc:
        raise DataError(f"{uri}: cannot list or download: {exc}") from None
    if not found:
        raise DataError(f"{uri}: no objects under this prefix")
    return target


def _read_s3(uri: str) -> bytes:
    bucket, key = split_s3_uri(uri)
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        response = s3_client().get_object(Bucket=bucket, Key=key)
        return response["Body"].read()
    except (BotoCoreError, ClientError) as exc:
        raise _s3_error(uri, "read", exc) from None


def _read_http(uri: str) -> bytes:
    request = urllib.request.Request(uri, headers={"User-Agent": "distilqa"})
    try:
        with urllib.request.urlopen(request, timeout=_HTTP_TIMEOUT_S) as response:
            return response.read()
    except urllib.error.HTTPError as exc:
        raise DataError(f"{uri}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataError(f"{uri}: cannot fetch: {reason}") from None
