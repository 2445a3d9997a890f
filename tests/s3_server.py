"""A real S3 API on loopback (moto's server) for tests of the registry on an object store.

Each test gets its own bucket; processes reach the server through the standard AWS
environment variables (AWS_ENDPOINT_URL...), as pods reach a real bucket.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class S3:
    endpoint: str
    env: dict[str, str]

    def bucket(self, prefix: str = "reg") -> str:
        """A new, empty bucket; returns its registry URL."""
        import s3fs

        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        fs = s3fs.S3FileSystem(skip_instance_cache=True, client_kwargs={"endpoint_url": self.endpoint})
        fs.mkdir(name)
        return f"s3://{name}/prod"


def start_s3():
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    os.environ.update(env)
    return server, S3(endpoint, env)


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server for the module's tests (each test takes its own bucket)."""
    server, handle = start_s3()
    yield handle
    server.stop()
