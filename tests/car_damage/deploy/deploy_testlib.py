"""Constants shared by the deploy tests (a plain module: conftest modules are not importable by name)."""

from __future__ import annotations

import socket

REGION = "us-east-1"
ROLE = "arn:aws:iam::123456789012:role/SageMakerExecution"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/car-damage:0123456789ab"
#: moto validates instance types against an old list that lacks ml.g5.*; the tool itself accepts any type.
GPU_TYPE = "ml.g4dn.xlarge"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
