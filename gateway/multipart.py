"""Uploads (`multipart/form-data`: audio to transcribe, images to edit): read once, re-encoded per
upstream with the engine's model name in the `model` field, every other field and file passed through
as sent, in order.

The body is already bounded by the gateway's `gateway_max_body_bytes` (gateway/bounds.py, 413 above
it) before it is parsed here; each endpoint names the file fields it takes (`file` for audio; `image`,
`image[]`, `mask` for edits, as the OpenAI SDK sends them).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.datastructures import UploadFile
from starlette.requests import Request

from gateway.refusal import Refusal, Why
from gateway.snapshot import ModelEntry, TargetSpec


@dataclass(frozen=True, slots=True)
class File:
    field: str
    filename: str
    content_type: str
    data: bytes


@dataclass(slots=True)
class Upload:
    fields: dict[str, str]  # the text fields (the last value of a repeated name)
    repeated: list[tuple[str, str]]  # every text field in order (`timestamp_granularities[]` repeats)
    files: list[File] = field(default_factory=list)
    boundary: str = field(default_factory=lambda: f"modelfleet{secrets.token_hex(12)}")

    @property
    def data(self) -> bytes:
        """The first file's bytes (the audio of a transcription)."""
        return self.files[0].data if self.files else b""

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
        for file in self.files:
            out += dash + _disposition(file.field, file.filename)
            out += f"\r\nContent-Type: {file.content_type}\r\n\r\n".encode() + file.data + b"\r\n"
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


async def read_upload(request: Request, file_fields: frozenset[str], required: str) -> Upload | Refusal:
    """The form, or why it cannot be read (naming the field). `required`: the file field that must
    be there (one of `file_fields`, the file fields accepted)."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return Refusal(
            Why.INVALID_REQUEST, f"Send a multipart/form-data body with a `{required}` file.", required
        )
    try:
        async with request.form(max_files=16, max_fields=64, max_part_size=1024 * 1024) as form:
            upload = Upload({}, [])
            for name, value in form.multi_items():
                if isinstance(value, UploadFile):
                    if name not in file_fields:
                        return Refusal(Why.INVALID_REQUEST, f"Unexpected file field `{name}`.", name)
                    data = await value.read()
                    if not data:
                        return Refusal(
                            Why.INVALID_REQUEST, f"Invalid value for `{name}`: the file is empty.", name
                        )
                    content_type = value.content_type or "application/octet-stream"
                    upload.files.append(File(name, value.filename or name.strip("[]"), content_type, data))
                else:
                    upload.fields[name] = value
                    upload.repeated.append((name, value))
    except Exception as exc:  # Starlette's MultiPartException and python-multipart's parse errors
        return Refusal(Why.INVALID_REQUEST, f"The multipart body could not be read ({exc}).", None)
    if not any(f.field == required or f.field == f"{required}[]" for f in upload.files):
        return Refusal(Why.INVALID_REQUEST, f"Invalid value for `{required}`: a file is required.", required)
    return upload
