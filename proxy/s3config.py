"""Where an S3-compatible bucket is, from the ``storage`` URL and the standard AWS variables.

Pure: the caller passes the environment (or any mapping) and the explicit settings in, and gets
a value object back. Explicit settings win over the environment, the way a flag wins over a
variable. The secret is kept out of ``repr`` so a logged config never shows it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from proxy.errors import SettingsError

# S3's rules for bucket names (the ones every S3-compatible store accepts): 3 to 63 lowercase
# letters, digits, dots and hyphens, starting and ending with a letter or digit.
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")
DEFAULT_REGION = "us-east-1"


@dataclass(frozen=True, slots=True)
class S3Config:
    bucket: str
    prefix: str  # no leading or trailing slash; "" for the bucket's root
    endpoint: str | None = None  # None: the provider's default (AWS)
    region: str = DEFAULT_REGION
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """The storage URL, for people: never an endpoint's userinfo or a credential."""
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    @property
    def allow_http(self) -> bool:
        return self.endpoint is not None and self.endpoint.startswith("http://")


def is_s3_url(storage: str) -> bool:
    return storage.startswith("s3://")


def s3_config_from(
    url: str,
    env: Mapping[str, str],
    *,
    endpoint: str | None = None,
    region: str | None = None,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
) -> S3Config:
    """The bucket and prefix from ``s3://bucket/prefix``; the endpoint, region and credentials
    from the arguments, else ``AWS_ENDPOINT_URL``, ``AWS_REGION`` (or ``AWS_DEFAULT_REGION``),
    ``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY`` in ``env``. SettingsError (naming the
    key, never the value of a secret) for anything unusable."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or parts.query or parts.fragment:
        raise SettingsError("storage: expected s3://bucket/prefix")
    if parts.username is not None or parts.password is not None or parts.port is not None:
        # credentials never go in the URL: it is shown in logs and on the status page
        raise SettingsError("storage: put credentials in AWS_ACCESS_KEY_ID/..., not the URL")
    bucket = parts.netloc  # not .hostname: that lowercases, and S3 would not
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise SettingsError("storage: not a valid bucket name (3-63 of a-z, 0-9, '.', '-')")
    segments = [s for s in parts.path.split("/") if s]
    if any(s in (".", "..") or not _SEGMENT.fullmatch(s) for s in segments):
        raise SettingsError("storage: the prefix may hold only A-Z a-z 0-9 . _ - between slashes")
    endpoint = endpoint or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None
    if endpoint is not None:
        ep = urlsplit(endpoint)
        if ep.scheme not in ("http", "https") or not ep.hostname:
            raise SettingsError("AWS_ENDPOINT_URL: expected http(s)://host[:port]")
        if ep.username is not None or ep.password is not None:
            raise SettingsError("AWS_ENDPOINT_URL: credentials do not belong in the URL")
    return S3Config(
        bucket=bucket,
        prefix="/".join(segments),
        endpoint=endpoint.rstrip("/") if endpoint else None,
        region=region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or DEFAULT_REGION,
        access_key_id=access_key_id or env.get("AWS_ACCESS_KEY_ID") or None,
        secret_access_key=secret_access_key or env.get("AWS_SECRET_ACCESS_KEY") or None,
    )
