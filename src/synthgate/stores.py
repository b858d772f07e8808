"""Object storage for every stage: a local folder (the embedded default) or S3/MinIO via boto3.
Published datasets live here, and so do mirrored training checkpoints and the TrainJob's dataset
and model transfers; it is infrastructure below every stage package (docs/ARCHITECTURE.md).

A store is addressed by a URI: a path or ``file:///abs/path`` for a folder, ``s3://bucket/prefix``
for S3. The S3 endpoint (MinIO, moto) comes from ``$AWS_ENDPOINT_URL`` (or
``$SYNTHGATE_S3_ENDPOINT_URL``), credentials only from the environment or the standard AWS
configuration (boto3's default chain): nothing secret is ever taken as an argument or printed.

Keys are ``/``-separated and relative to the store's root. Both stores offer the same small set of
operations the publisher and the puller need, including ranged reads (for resuming a download),
a server-side copy (for moving a verified staging upload into place) and a conditional create
(:meth:`create_bytes`: the one write that only one of several concurrent writers can win, on a
folder a hard link that fails when the name exists, on S3 ``If-None-Match: *``). Every writer
writes through a temporary name of its own, so concurrent writers never share one.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from synthgate.errors import SynthgateError
from synthgate.utils import name_path

CHUNK = 8 * 1024 * 1024


class StoreError(SynthgateError):
    """A store cannot be reached or used (credentials, endpoint, bucket); the message names which."""


class Store(Protocol):
    uri: str
    kind: str

    def check(self) -> None: ...
    def put_file(self, local: Path, key: str, sha256: str | None = None) -> None: ...
    def put_bytes(self, key: str, data: bytes) -> None: ...
    def create_bytes(self, key: str, data: bytes) -> bool: ...
    def get_bytes(self, key: str) -> bytes: ...
    def get_file(self, key: str, local: Path, offset: int = 0) -> int: ...
    def size(self, key: str) -> int | None: ...
    def list_keys(self, prefix: str) -> list[str]: ...
    def copy(self, src: str, dst: str) -> None: ...
    def delete_prefix(self, prefix: str) -> None: ...


def store_location(uri: str | Path) -> tuple[str, str, str]:
    """How :func:`open_store` reads ``uri``: ("s3", bucket, prefix) or ("file", "", folder path)."""
    text = str(uri)
    parsed = urlparse(text)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise StoreError(f"store {text!r}: no bucket", hint="use s3://BUCKET[/PREFIX]")
        return "s3", parsed.netloc, parsed.path.strip("/")
    if parsed.scheme == "file":
        return "file", "", parsed.path
    if parsed.scheme and len(parsed.scheme) > 1:  # not a Windows drive letter
        raise StoreError(f"store {text!r}: unsupported scheme {parsed.scheme!r}",
                         hint="use a folder path, file:///PATH or s3://BUCKET/PREFIX")
    return "file", "", text


def open_store(uri: str | Path) -> Store:
    """``s3://bucket[/prefix]`` -> S3Store; a path or ``file://`` URI -> FileStore."""
    kind, bucket, where = store_location(uri)
    return S3Store(bucket, where) if kind == "s3" else FileStore(Path(where))


# --------------------------------------------------------------------------------------------
def _tmp_name(dst: Path) -> Path:
    """A temporary name beside ``dst`` that is this writer's alone (``.tmp`` last: never listed)."""
    return dst.with_name(f"{dst.name}.{uuid.uuid4().hex[:12]}.tmp")


@dataclass
class FileStore:
    root: Path
    kind: str = "file"

    @property
    def uri(self) -> str:
        return str(self.root)

    def _path(self, key: str) -> Path:
        parts = [p for p in key.split("/") if p]
        if any(p in (".", "..") for p in parts):
            raise StoreError(f"key {key!r} leaves the store")
        return self.root.joinpath(*parts)

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"store {self.root}: cannot create or use the folder ({e.strerror})") from None

    def put_file(self, local: Path, key: str, sha256: str | None = None) -> None:
        self._replace_with(key, lambda tmp: shutil.copyfile(local, tmp))

    def put_bytes(self, key: str, data: bytes) -> None:
        self._replace_with(key, lambda tmp: tmp.write_bytes(data))

    def _replace_with(self, key: str, write: Any) -> None:
        """Write through a temporary name of this writer's own, then rename it over ``key`` (a reader
        sees the old file or the new one, never a part; a temporary left by a failure is removed)."""
        dst = self._path(key)
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = _tmp_name(dst)
        try:
            write(tmp)
            os.replace(tmp, dst)
        except OSError as e:
            name_path(e, dst)  # a full disk under the store: write(2) and sendfile(2) name no file
            raise
        finally:
            tmp.unlink(missing_ok=True)

    def create_bytes(self, key: str, data: bytes) -> bool:
        """Create ``key`` with ``data`` unless it exists: True when this call created it, False when it
        existed (whoever wrote it). The complete file appears at once: a temporary of this writer's own,
        hard-linked to ``key`` (``link`` fails when the name exists; one of several racing writers wins)."""
        dst = self._path(key)
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = _tmp_name(dst)
        try:
            tmp.write_bytes(data)
            os.link(tmp, dst)
            return True
        except FileExistsError:
            return False
        except OSError as e:
            name_path(e, dst)
            raise
        finally:
            tmp.unlink(missing_ok=True)

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise KeyError(key) from None

    def get_file(self, key: str, local: Path, offset: int = 0) -> int:
        src = self._path(key)
        if not src.exists():
            raise KeyError(key)
        n = 0
        with open(src, "rb") as fin, open(local, "ab" if offset else "wb") as fout:
            fin.seek(offset)
            while block := fin.read(CHUNK):
                fout.write(block)
                n += len(block)
        return n

    def size(self, key: str) -> int | None:
        p = self._path(key)
        return p.stat().st_size if p.is_file() else None

    def list_keys(self, prefix: str) -> list[str]:
        base = self._path(prefix) if prefix else self.root
        if not base.is_dir():
            return []
        return sorted(p.relative_to(self.root).as_posix() for p in base.rglob("*")
                      if p.is_file() and not p.name.endswith(".tmp"))

    def copy(self, src: str, dst: str) -> None:
        source = self._path(src)
        self._replace_with(dst, lambda tmp: shutil.copyfile(source, tmp))

    def delete_prefix(self, prefix: str) -> None:
        p = self._path(prefix)
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        elif p.exists():
            p.unlink()


# --------------------------------------------------------------------------------------------
def _endpoint() -> str | None:
    return os.environ.get("SYNTHGATE_S3_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL") or None


@contextlib.contextmanager
def _s3_errors(store: S3Store, what: str) -> Iterator[None]:
    """Translate boto3's exceptions into messages that name the endpoint and bucket, never a secret."""
    from botocore.exceptions import (
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
    )

    where = f"s3://{store.bucket}" + (f" at {store.endpoint}" if store.endpoint else "")
    try:
        yield
    except (NoCredentialsError, PartialCredentialsError):
        raise StoreError(f"{what}: no S3 credentials for {where}",
                         hint="set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) in the environment"
                         ) from None
    except EndpointConnectionError:
        raise StoreError(f"{what}: cannot reach the S3 endpoint {store.endpoint or '(AWS default)'}",
                         hint="check AWS_ENDPOINT_URL and that the server is running") from None
    except ClientError as e:
        code = str(e.response.get("Error", {}).get("Code", ""))
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("NoSuchBucket",) or (code == "404" and what.startswith("bucket")):
            raise StoreError(f"{what}: bucket {store.bucket!r} does not exist at {where}",
                             hint="create it (the k8s MinIO job makes synthgate-datasets) or fix the store URI"
                             ) from None
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "InvalidToken",
                    "ExpiredToken") or status == 403:
            raise StoreError(f"{what}: access to {where} denied ({code}): wrong or insufficient credentials",
                             hint="check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (values are never printed)"
                             ) from None
        if code in ("NoSuchKey", "404"):
            raise KeyError(what) from None
        raise StoreError(f"{what}: S3 error {code or status} at {where}") from None


class S3Store:
    kind = "s3"

    def __init__(self, bucket: str, prefix: str = "", client: Any = None):
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint = _endpoint()
        self._client = client

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}" + (f"/{self.prefix}" if self.prefix else "")

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            cfg = Config(retries={"max_attempts": 5, "mode": "standard"}, max_pool_connections=32,
                         connect_timeout=5, read_timeout=60)
            self._client = boto3.session.Session().client("s3", endpoint_url=self.endpoint, config=cfg)
        return self._client

    def _key(self, key: str) -> str:
        parts = [p for p in key.split("/") if p]
        if any(p in (".", "..") for p in parts):
            raise StoreError(f"key {key!r} leaves the store")
        return "/".join(([self.prefix] if self.prefix else []) + parts)

    def check(self) -> None:
        with _s3_errors(self, f"bucket s3://{self.bucket}"):
            self.client.head_bucket(Bucket=self.bucket)

    def put_file(self, local: Path, key: str, sha256: str | None = None) -> None:
        """Upload; with ``sha256`` the server checks the bytes it received against it (x-amz-checksum)."""
        extra: dict[str, Any] = {}
        if sha256:
            extra["ChecksumSHA256"] = base64.b64encode(bytes.fromhex(sha256)).decode()
        with _s3_errors(self, f"upload {key}"), open(local, "rb") as f:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=f, **extra)

    def put_bytes(self, key: str, data: bytes) -> None:
        with _s3_errors(self, f"upload {key}"):
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def create_bytes(self, key: str, data: bytes) -> bool:
        """Create ``key`` unless it exists (``If-None-Match: *``, which S3 and MinIO evaluate atomically):
        True when this call created it, False when it existed. A 409 (a concurrent conditional write in
        flight) is retried; a server that ignores the header would make this a plain put."""
        from botocore.exceptions import ClientError

        for attempt in range(5):
            with _s3_errors(self, f"upload {key}"):
                try:
                    self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, IfNoneMatch="*")
                    return True
                except ClientError as e:
                    code = str(e.response.get("Error", {}).get("Code", ""))
                    status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                    if code == "PreconditionFailed" or status == 412:
                        return False
                    if not (code == "ConditionalRequestConflict" or status == 409) or attempt == 4:
                        raise
            time.sleep(0.05 * (attempt + 1))
        return False  # pragma: no cover (the loop returns or raises)

    def get_bytes(self, key: str) -> bytes:
        with _s3_errors(self, key):
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()

    def get_file(self, key: str, local: Path, offset: int = 0) -> int:
        kwargs: dict[str, Any] = {"Range": f"bytes={offset}-"} if offset else {}
        n = 0
        with _s3_errors(self, key):
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key), **kwargs)["Body"]
            with open(local, "ab" if offset else "wb") as fout:
                for block in body.iter_chunks(CHUNK):
                    fout.write(block)
                    n += len(block)
        return n

    def size(self, key: str) -> int | None:
        try:
            with _s3_errors(self, key):
                return int(self.client.head_object(Bucket=self.bucket, Key=self._key(key))["ContentLength"])
        except KeyError:
            return None

    def list_keys(self, prefix: str) -> list[str]:
        full = self._key(prefix)
        full = full + "/" if full and not full.endswith("/") else full
        strip = len(self.prefix) + 1 if self.prefix else 0
        keys: list[str] = []
        with _s3_errors(self, f"list {self.uri}/{prefix}"):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
                keys += [o["Key"][strip:] for o in page.get("Contents", [])]
        return sorted(keys)

    def copy(self, src: str, dst: str) -> None:
        with _s3_errors(self, f"copy {src}"):
            self.client.copy_object(Bucket=self.bucket, Key=self._key(dst),
                                    CopySource={"Bucket": self.bucket, "Key": self._key(src)})

    def delete_prefix(self, prefix: str) -> None:
        keys = [self._key(k) for k in self.list_keys(prefix)]
        with _s3_errors(self, f"delete {prefix}"):
            for i in range(0, len(keys), 1000):
                self.client.delete_objects(Bucket=self.bucket,
                                           Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]], "Quiet": True})
