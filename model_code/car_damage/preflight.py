"""Check, before any minute is spent training, that every program the demo's service needs is here.

The service (container/serve) runs nginx in front of gunicorn. gunicorn comes with the project's Python
packages; nginx is a system program. When it is missing and this process may install it (root with apt-get),
it is installed; otherwise the error says exactly what to run.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

logger = logging.getLogger(__name__)

#: Where container/serve looks for nginx besides PATH (Debian installs it in /usr/sbin, off a user's PATH).
NGINX_DIRS = ("/usr/sbin", "/usr/local/sbin")
ENV_NGINX = "NGINX"
APT_PACKAGE = "nginx-light"
INSTALL_TIMEOUT_S = 600


class MissingToolError(RuntimeError):
    """A program the service needs is absent and could not be installed here."""


@dataclass(frozen=True)
class InstallPlan:
    """How to get a missing system program: commands to run now (empty: this process cannot install)."""

    commands: list[list[str]]
    advice: str


def find_nginx(path: str | None = None) -> str | None:
    """nginx as container/serve finds it: $NGINX, then PATH, then the sbin folders."""
    named = os.environ.get(ENV_NGINX)
    if named and os.access(named, os.X_OK):
        return named
    search = os.pathsep.join([path if path is not None else os.environ.get("PATH", ""), *NGINX_DIRS])
    return shutil.which("nginx", path=search)


def nginx_install_plan(euid: int, apt_get: str | None) -> InstallPlan:
    """root with apt-get installs it now; anyone else is told the command (with sudo) and stops."""
    advice = (f"nginx is not installed. Install it, then run `make demo` again:\n"
              f"  Debian/Ubuntu: sudo apt-get update && sudo apt-get install -y {APT_PACKAGE}\n"
              f"  macOS:         brew install nginx\n"
              f"  elsewhere:     install nginx, or set NGINX=/path/to/nginx")
    if euid == 0 and apt_get:
        return InstallPlan([[apt_get, "update", "-q"],
                            [apt_get, "install", "-y", "-q", "--no-install-recommends", APT_PACKAGE]], advice)
    return InstallPlan([], advice)


def _run(commands: Sequence[list[str]]) -> None:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for command in commands:
        logger.info("running %s", " ".join(command))  # apt-get prints its own progress
        subprocess.run(command, check=True, env=env, timeout=INSTALL_TIMEOUT_S)


def ensure_service_tools() -> str:
    """Raise MissingToolError at once when the service cannot start here; returns nginx's path."""
    if importlib.util.find_spec("gunicorn") is None:
        raise MissingToolError("gunicorn is not installed in this Python: run `make venv` (pip install -e .[test])")
    nginx = find_nginx()
    if nginx:
        return nginx
    plan = nginx_install_plan(os.geteuid(), shutil.which("apt-get"))
    if not plan.commands:
        raise MissingToolError(plan.advice)
    logger.warning("nginx is not installed; installing %s with apt-get (root)", APT_PACKAGE)
    try:
        _run(plan.commands)
    except (OSError, subprocess.SubprocessError) as exc:
        raise MissingToolError(f"installing nginx failed ({exc}).\n{plan.advice}") from exc
    nginx = find_nginx()
    if not nginx:
        raise MissingToolError(f"apt-get installed {APT_PACKAGE} but no nginx was found.\n{plan.advice}")
    return nginx
