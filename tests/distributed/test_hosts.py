"""SCOOP over a hostfile of two hosts, as users run it: the second host is an SSH server on the loopback that
this test starts, with key authentication it sets up. Skipped, with the reason, where sshd is missing."""

import getpass
import json
import os
import shutil
import socket
import subprocess
import time

import pytest
from conftest import cli, write_run_config

pytestmark = pytest.mark.slow

SSHD = shutil.which("sshd") or next((p for p in ("/usr/sbin/sshd", "/usr/local/sbin/sshd") if os.path.exists(p)), None)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def second_host(tmp_path):
    """``(environment whose ssh reaches it, its name, how many logins it has accepted)``: an sshd on 127.0.0.1
    that takes this user's new key."""
    if SSHD is None or shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        pytest.skip("no OpenSSH server or client here (apt install openssh-server openssh-client)")
    if os.geteuid() == 0 and not os.path.isdir("/run/sshd"):
        os.makedirs("/run/sshd", mode=0o755)  # sshd's privilege-separation folder, as its service makes it
    folder = tmp_path / "ssh"
    folder.mkdir(mode=0o700)
    for key in ("host", "user"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / key)], check=True)
    shutil.copy(folder / "user.pub", folder / "authorized_keys")
    port = free_port()
    (folder / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {folder / 'host'}\n"
        f"AuthorizedKeysFile {folder / 'authorized_keys'}\n"
        f"PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
        f"PermitRootLogin prohibit-password\nPidFile {folder / 'sshd.pid'}\n")
    (folder / "ssh_config").write_text(
        f"Host node2\n  HostName 127.0.0.1\n  Port {port}\n  User {getpass.getuser()}\n"
        f"  IdentityFile {folder / 'user'}\n"
        f"  IdentitiesOnly yes\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ssh").write_text(f"#!/bin/sh\nexec {shutil.which('ssh')} -F {folder / 'ssh_config'} \"$@\"\n")
    (bin_dir / "ssh").chmod(0o755)
    log = folder / "sshd.log"
    server = subprocess.Popen([SSHD, "-D", "-E", str(log), "-f", str(folder / "sshd_config")])
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    try:
        deadline = time.time() + 20
        while subprocess.run(["ssh", "-oBatchMode=yes", "node2", "true"], env=env, capture_output=True).returncode:
            if server.poll() is not None or time.time() > deadline:
                server.kill()
                pytest.skip(f"sshd could not be started here: {log.read_text().strip()[-300:] if log.exists() else ''}")
            time.sleep(0.3)
        yield env, "node2", lambda: log.read_text().count("Accepted publickey")
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_scoop_over_a_hostfile_of_two_hosts_gives_the_serial_run(second_host, saved_llamas, tmp_path):
    env, host, logins = second_host
    before = logins()
    write_run_config(tmp_path, saved_llamas, ga={"population_size": 8, "max_generations": 3, "seed": 4})
    serial = cli("run", tmp_path / "config.yaml", "--output", tmp_path / "serial")
    assert serial.returncode == 0, serial.stderr
    (tmp_path / "hosts").write_text(f"127.0.0.1 1\n{host} 1\n")
    remote = cli("run", tmp_path / "config.yaml", "--output", tmp_path / "hosts-run", "--workers", 2,
                 "--hostfile", tmp_path / "hosts", "--scoop-args=--tunnel", env=env)
    assert remote.returncode == 0, remote.stderr
    two, one = (json.loads((tmp_path / name / "recipe.json").read_text()) for name in ("hosts-run", "serial"))
    assert two["halloffame"] == one["halloffame"]
    assert logins() > before  # SCOOP started the other host's worker through ssh
    assert two["run"]["processes"] == 2  # the root here and the worker that ssh started on the other host
    # (--tunnel: this machine's name is a loopback address, which SCOOP will not give workers on other hosts)
