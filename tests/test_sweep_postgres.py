"""The many-machines path: the same kill/restart check against a real PostgreSQL server started here.

The server is Debian's `postgresql` package (initdb, pg_ctl); it refuses to run as root, so as root it
runs as the `postgres` user in a temporary directory that user owns, listening on a unix socket only.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from sweep_helpers import kill_and_restart

BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin"))


def _as_postgres(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    if shutil.which("runuser"):
        return ["runuser", "-u", "postgres", "--", *cmd]
    return ["su", "postgres", "-c", " ".join(cmd)]


@pytest.fixture(scope="module")
def postgres_url():
    if not BIN or not Path(BIN[-1], "initdb").exists():
        pytest.skip("PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/initdb): "
                    "apt-get install -y postgresql")
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no `postgres` user to run the server as")
    bindir = BIN[-1]
    root = Path(tempfile.mkdtemp(prefix="lp_pg_"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    if os.geteuid() == 0:
        for p in (root, sock):
            os.chown(p, pw.pw_uid, pw.pw_gid)
    user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
    run = lambda cmd: subprocess.run(_as_postgres(cmd), check=True, capture_output=True, timeout=120)  # noqa: E731
    run([f"{bindir}/initdb", "-D", str(data), "-A", "trust", "-U", user, "--no-sync"])
    run([f"{bindir}/pg_ctl", "-D", str(data), "-l", str(root / "log"), "-w", "-o",
         f"-k {sock} -c listen_addresses='' -c fsync=off -p 5999", "start"])
    try:
        run([f"{bindir}/createdb", "-h", str(sock), "-p", "5999", "-U", user, "sweeps"])
        yield f"postgresql://{user}@/sweeps?host={sock}&port=5999"   # the README's form
    finally:
        subprocess.run(_as_postgres([f"{bindir}/pg_ctl", "-D", str(data), "-m", "immediate", "stop"]),
                       capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def test_killed_worker_point_redone_once_and_restart_loses_nothing_postgres(tmp_path, postgres_url):
    kill_and_restart(tmp_path, postgres_url, study="kill_pg")
