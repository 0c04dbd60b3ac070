"""The offline demo of model files (`make run`, i.e. `python -m portal --demo`): stand-ins for the two
third parties, so requesting, following and finishing a download works with no internet.

- a stand-in hub (`portal.files.standin`, Hugging Face's wire format) serving a tiny model,
  `modelfleet-demo/tiny-chat`, published in the plaza as `tiny-chat`;
- a local S3-compatible store (moto's server, a development dependency) at the demo `local`
  region's store address (http://127.0.0.1:9000, bucket `modelfleet-models`).

Both are named as stand-ins in the log. Outside the demo nothing here runs.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import sys
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from pydantic import SecretStr
from sqlalchemy import select

from portal import audit
from portal.files.standin import Bytes, Pattern, Repo, StandInHub, serve
from portal.services import Services
from portal.settings import S3Credentials
from store.db import transaction
from store.models import PlazaModel, Provider

log = logging.getLogger("modelfleet.portal.files")
REPOSITORY = "modelfleet-demo/tiny-chat"
MODEL_ID = "tiny-chat"
DEMO_KEYS = {
    "access_key_id": "demo-stand-in",
    "secret_access_key": "demo-stand-in-secret",
}  # moto's, not real
FILES = {
    "config.json": b'{"architectures": ["Qwen3ForCausalLM"], "hidden_size": 64, "num_hidden_layers": 2}',
    "tokenizer.json": b'{"version": "1.0", "model": {"type": "BPE", "vocab": {}}}' * 400,
    "generation_config.json": b'{"do_sample": true, "temperature": 0.7}',
}
WEIGHTS = 24 * 1024 * 1024  # big enough that its progress shows, small enough to copy in seconds


def _say(text: str) -> None:
    """Printed, as the demo's other stand-ins are announced, and logged."""
    print(f"modelfleet: model files: {text}", file=sys.stderr)
    log.info("model files: %s", text)


def _moto_server(host: str, port: int) -> Any:
    """moto's threaded S3 server, made to say when its port was taken after the check (another demo
    portal starting at once): moto's own `start` then waits forever for a thread that died on the bind."""
    from moto.server import ThreadedMotoServer

    class Store(ThreadedMotoServer):
        refused = False

        def _server_entry(self) -> None:
            try:
                super()._server_entry()
            except (OSError, SystemExit):  # werkzeug prints a failed bind and exits (the thread)
                self.refused = True
                self._server_ready_event.set()

        def started(self) -> bool:
            self.start()
            return not self.refused

        def stop(self) -> None:
            super().stop()
            if self._server is not None:  # moto stops serving but leaves the port bound
                self._server.server_close()

    return Store(ip_address=host, port=port, verbose=False)


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def _start_store(services: Services, stops: list[Callable[[], None]]) -> None:
    region = services.repository.snapshot("demo").fleet.regions.get("local")
    if region is None:
        return
    store = region.model_store
    parts = urlsplit(store.endpoint)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    if host not in ("127.0.0.1", "localhost"):
        return
    try:
        server = _moto_server(host, port)
    except ImportError:
        log.warning(
            "model files: moto is not installed, so the demo has no local S3 stand-in at %s", store.endpoint
        )
        return
    if not _port_free(host, port) or not server.started():
        log.warning("model files: %s is taken; the demo's local S3 stand-in did not start", store.endpoint)
        return
    stops.append(server.stop)
    creds = S3Credentials(
        access_key_id=DEMO_KEYS["access_key_id"], secret_access_key=SecretStr(DEMO_KEYS["secret_access_key"])
    )
    services.settings.s3_credentials.setdefault(store.credentials_secret, creds)
    import boto3  # type: ignore[import-untyped]

    client: Any = boto3.client(
        "s3",
        endpoint_url=store.endpoint,
        region_name="us-east-1",
        aws_access_key_id=DEMO_KEYS["access_key_id"],
        aws_secret_access_key=DEMO_KEYS["secret_access_key"],
    )
    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
        client.create_bucket(Bucket=store.bucket)
    _say(
        f"a LOCAL S3 STAND-IN (moto's server, not a real store) answers at {store.endpoint}, "
        f"bucket {store.bucket}"
    )


def _start_hub(services: Services, stops: list[Callable[[], None]]) -> None:
    files: dict[str, Any] = {name: Bytes(data) for name, data in FILES.items()}
    files["model.safetensors"] = Pattern(WEIGHTS, seed=42)
    hub = StandInHub({REPOSITORY: Repo(files)})
    ready = threading.Event()
    stop = threading.Event()
    url: list[str] = []

    def run() -> None:
        with serve(hub.app()) as base:
            url.append(base)
            ready.set()
            stop.wait()

    threading.Thread(target=run, name="files-standin-hub", daemon=True).start()
    if not ready.wait(20):
        log.warning("model files: the demo's stand-in hub did not start")
        return
    stops.append(stop.set)
    services.settings.files_hf_endpoint = url[0]
    _say(
        f"a STAND-IN HUB (not Hugging Face) serves {REPOSITORY} at {url[0]}; "
        f"plaza model {MODEL_ID!r} downloads from it"
    )


def _plaza_model(services: Services) -> None:
    with transaction(services.sessions) as session:
        if session.scalar(select(PlazaModel).where(PlazaModel.id == MODEL_ID)) is not None:
            return
        if session.get(Provider, "modelfleet") is None:
            session.add(
                Provider(
                    id="modelfleet", name="Modelfleet demo", description="Stand-ins for the offline demo."
                )
            )
            session.flush()
        session.add(
            PlazaModel(
                id=MODEL_ID,
                name="Tiny chat (demo stand-in)",
                provider_id="modelfleet",
                capabilities=["text-generation"],
                tags=["demo", "stand-in"],
                description="A tiny model served by the demo's stand-in hub, to try model files offline.",
                source_uri=f"hf://{REPOSITORY}",
                published=True,
            )
        )
        audit.record(
            session,
            actor="system",
            action="CreateModel",
            resource_type="PlazaModel",
            resource_id=MODEL_ID,
            detail="demo stand-in model for model files",
        )


def files_demo_starter(services: Services) -> Callable[[], None] | None:
    """For the app's STARTERS, before the files worker: the stand-ins, in the demo only."""
    if not services.settings.demo or "demo" not in services.repository.stacks():
        return None
    stops: list[Callable[[], None]] = []
    _start_hub(services, stops)
    _start_store(services, stops)
    _plaza_model(services)

    def stop() -> None:
        for fn in reversed(stops):
            with contextlib.suppress(Exception):
                fn()

    return stop


__all__ = ["files_demo_starter"]
