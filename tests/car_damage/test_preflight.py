"""car_damage.preflight: the demo checks its service's programs before it trains."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from car_damage import demo, preflight


def test_root_with_apt_installs_nginx_light_and_others_are_told_the_command() -> None:
    root = preflight.nginx_install_plan(0, "/usr/bin/apt-get")
    assert root.commands == [["/usr/bin/apt-get", "update", "-q"],
                             ["/usr/bin/apt-get", "install", "-y", "-q", "--no-install-recommends", "nginx-light"]]
    user = preflight.nginx_install_plan(1000, "/usr/bin/apt-get")
    assert user.commands == []
    assert "sudo apt-get update && sudo apt-get install -y nginx-light" in user.advice
    assert preflight.nginx_install_plan(0, None).commands == []  # root without apt-get (not Debian): advice only


def test_nginx_is_found_where_serve_looks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    nginx = fake_bin / "nginx"
    nginx.write_text("#!/bin/sh\n")
    nginx.chmod(0o755)
    monkeypatch.delenv("NGINX", raising=False)
    monkeypatch.setattr(preflight, "NGINX_DIRS", ())
    assert preflight.find_nginx(path=str(fake_bin)) == str(nginx)
    assert preflight.find_nginx(path=str(tmp_path)) is None
    monkeypatch.setattr(preflight, "NGINX_DIRS", (str(fake_bin),))  # /usr/sbin is off a user's PATH
    assert preflight.find_nginx(path=str(tmp_path)) == str(nginx)
    monkeypatch.setattr(preflight, "NGINX_DIRS", ())
    monkeypatch.setenv("NGINX", str(nginx))
    assert preflight.find_nginx(path=str(tmp_path)) == str(nginx)


def test_demo_without_nginx_stops_before_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("NGINX", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(preflight, "NGINX_DIRS", ())
    monkeypatch.setattr(preflight.os, "geteuid", lambda: 1000)
    trained = []
    monkeypatch.setattr(demo, "prepare_model", lambda *a, **k: trained.append(a))
    started = time.monotonic()
    code = demo.main(["--model-dir", str(tmp_path / "model"), "--out", str(tmp_path / "out"),
                      "--cache", str(tmp_path / "cache")])
    assert code == 1 and trained == []
    assert time.monotonic() - started < 5
    err = capsys.readouterr().err
    assert "nginx is not installed" in err and "sudo apt-get install -y nginx-light" in err
