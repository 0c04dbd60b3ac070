"""Uploads (`multipart/form-data`, /v1/audio/transcriptions): read once, re-encoded per upstream with
the engine's model name in the `model` field, every other field and file passed through as sent.

The body is already bounded by the gateway's `gateway_max_body_bytes` (gateway/bounds.py, 413 above
it) before it is parsed here; one upload file per request.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.datastructures import UploadFile
from starlette.requests import Request

from gateway.refusal import Refusal, Why
from gateway.snapshot import ModelEntry, TargetSpec


@dataclass(slots=True)
class Upload:
    fields: dict[str, str]  # the text fields (the last value of a repeated name)
    repeated: list[tuple[str, str]]  # every text field in order (`timestamp_granularities[]` repeats)
    file_field: str = "file"
    filename: str = "audio"
    content_type: str = "application/octet-stream"
    data: bytes = b""
    boundary: str = field(default_factory=lambda: f"modelfleet{secrets.token_hex(12)}")

    @property
    def media_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def encode(self, model: str) -> bytes:
        """The form as the upstream gets it, its `model` field replaced."""
        dash = f"--{self.boundary}\r\n".encode()
        out = bytearray()
        for name, value in self.repeated:
            if name == "model":
                continue
            out += dash + _disposition(name) + b"\r\n\r\n" + value.encode() + b"\r\n"
        out += dash + _disposition("model") + b"\r\n\r\n" + model.encode() + b"\r\n"
        out += dash + _disposition(self.file_field, self.filename)
        out += f"\r\nContent-Type: {self.content_type}\r\n\r\n".encode() + self.data + b"\r\n"
        out += f"--{self.boundary}--\r\n".encode()
        return bytes(out)

    def body_for(self, model: ModelEntry) -> Callable[[TargetSpec], bytes]:
        cache: dict[str | None, bytes] = {}

        def encode(spec: TargetSpec) -> bytes:
            name = spec.upstream_model
            if name not in cache:
                cache[name] = self.encode(name or model.public_id)
            return cache[name]

        return encode


def _disposition(name: str, filename: str | None = None) -> bytes:
    quoted = name.replace('"', "%22").replace("\r", "").replace("\n", "")
    said = f'Content-Disposition: form-data; name="{quoted}"'
    if filename is not None:
        said += '; filename="' + filename.replace('"', "%22").replace("\r", "").replace("\n", "") + '"'
    return said.encode()


async def read_upload(request: Request, file_field: str = "file") -> Upload | Refusal:
    """The form, or why it cannot be read (naming the field)."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return Refusal(Why.INVALID_REQUEST, "Send the audio as multipart/form-data (a `file` field).", "file")
    try:
        async with request.form(max_files=1, max_fields=64, max_part_size=1024 * 1024) as form:
            upload = Upload({}, [])
            for name, value in form.multi_items():
                if isinstance(value, UploadFile):
                    if name != file_field:
                        return Refusal(Why.INVALID_REQUEST, f"Unexpected file field `{name}`.", name)
                    upload.filename = value.filename or "audio"
                    upload.content_type = value.content_type or "application/octet-stream"
                    upload.data = await value.read()
                else:
                    upload.fields[name] = value
                    upload.repeated.append((name, value))
    except Exception as exc:  # Starlette's MultiPartException and python-multipart's parse errors
        return Refusal(Why.INVALID_REQUEST, f"The multipart body could not be read ({exc}).", None)
    if not upload.data:
        return Refusal(
            Why.INVALID_REQUEST, "Invalid value for `file`: a non-empty audio file is required.", "file"
        )
    return upload
