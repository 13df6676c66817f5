"""The journal storage survives a torn last line and a full disk, and reports a damaged line in one line."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import optuna
import pytest
from sweep_helpers import TOY, check_exactly_once, trials, write_spec

from lightning_phase.cli import main as cli_main
from lightning_phase.storage import FencedJournalFileBackend, JournalDamaged, open_storage
from lightning_phase.sweep import commands


def _sweep(spec: Path, st: str, study: str) -> int:
    return commands.main(["sweep", str(spec), "--storage", st, "--study", study, "--runner", TOY, "--no-progress",
                          "--heartbeat", "0.3", "--grace", "1"])


def test_torn_last_line_is_fenced_and_the_rerun_finishes(tmp_path, capsys):
    st = str(tmp_path / "s.journal")
    spec = write_spec(tmp_path / "a.yaml", grid={"seed_everything": [0, 1, 2]})
    assert _sweep(spec, st, "a") == 0
    with open(st, "ab") as f:   # a writer killed mid-append
        f.write(b'{"op_code":5,"worker_id":"x","trial_id":0,"user_attr":{"sum')
    assert len(trials(st, "a")) == 3                     # readers skip the torn tail
    assert _sweep(spec, st, "b") == 0                    # the next append cuts it off first
    text = Path(st).read_bytes()
    assert text.endswith(b"\n") and all(json.loads(line) for line in text.splitlines())   # every line whole
    check_exactly_once(trials(st, "b"), 3)
    assert cli_main(["results", "a", "--storage", st]) == 0


def test_damaged_line_is_one_line_with_file_and_byte_offset(tmp_path, capsys):
    st = str(tmp_path / "s.journal")
    spec = write_spec(tmp_path / "a.yaml", grid={"seed_everything": [0]})
    assert _sweep(spec, st, "a") == 0
    lines = Path(st).read_bytes().splitlines(keepends=True)
    offset = sum(map(len, lines[:2]))
    Path(st).write_bytes(b"".join(lines[:2]) + b'{"op_code":0,"stu\n' + b"".join(lines[2:]))
    capsys.readouterr()
    for argv in (["results", "a", "--storage", st], ["sweep", str(spec), "--storage", st, "--study", "a",
                                                    "--runner", TOY, "--no-progress"]):
        assert cli_main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and st in err and f"byte {offset}" in err, err
    with pytest.raises(JournalDamaged):
        open_storage(st)


def test_failed_write_enospc_leaves_the_journal_intact(tmp_path, monkeypatch):
    st = str(tmp_path / "s.journal")
    storage = open_storage(st)
    study = optuna.create_study(storage=storage, study_name="x")
    before = Path(st).read_bytes()

    def half_then_enospc(fd, offset, data):
        os.pwrite(fd, data[: len(data) // 2], offset)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(FencedJournalFileBackend, "_write", staticmethod(half_then_enospc))
    with pytest.raises(OSError):
        study.set_user_attr("k", "v" * 1000)
    assert Path(st).read_bytes() == before
    monkeypatch.undo()
    study.set_user_attr("k", "w")
    assert open_storage(st).get_study_user_attrs(storage.get_study_id_from_name("x")) == {"k": "w"}


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("mount") is None, reason="needs root to mount a tmpfs")
def test_real_disk_full_in_a_sweep_then_rerun_finishes(tmp_path):
    """A 256 KiB tmpfs: the journal's disk fills mid-sweep; with space freed the rerun completes the grid."""
    mnt = tmp_path / f"small_{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        st = str(mnt / "s.journal")
        spec = write_spec(tmp_path / "full.yaml", grid={"seed_everything": list(range(6))})
        filler = mnt / "filler"
        with open(filler, "wb") as f:   # leave ~6 KB: enough to create the study, not to finish 6 trials
            free = shutil.disk_usage(mnt).free
            f.write(b"x" * max(0, free - 6000))
        code = _sweep(spec, st, "full")
        assert code != 0
        assert not Path(st).read_bytes() or Path(st).read_bytes().endswith(b"\n")
        filler.unlink()
        assert _sweep(spec, st, "full") == 0
        check_exactly_once(trials(st, "full"), 6)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_journal_heartbeat_fails_only_the_silent_trial_once_through_optuna(tmp_path):
    """Optuna's fail_stale_trials over HeartbeatJournalStorage: the trial without heartbeat for longer than
    the grace is marked, failed and handed to the stale callback once, also when a second process reaps;
    the trial whose heartbeat is fresh keeps running."""
    import time
    import warnings

    from optuna.storages import fail_stale_trials as optuna_fail_stale_trials
    from optuna.trial import TrialState

    from lightning_phase.storage import Heartbeat

    def fail_stale_trials(study):
        with warnings.catch_warnings():   # "experimental" since Optuna 2.9
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna_fail_stale_trials(study)

    stale: list[int] = []
    hb = Heartbeat(interval=0.1, grace=3.0, on_stale=lambda study, t: stale.append(t.number),
                   mark=lambda t, silent: {"fail_reason": "STALE", "error": f"silent {silent:.1f} s"})
    path = str(tmp_path / "hb.journal")
    one, two = open_storage(path, hb), open_storage(path, hb)   # two processes' connections
    study = optuna.create_study(storage=one, study_name="hb")
    other = optuna.load_study(storage=two, study_name="hb")
    study.enqueue_trial({})
    study.enqueue_trial({})
    silent, alive = study._pop_waiting_trial_id(), study._pop_waiting_trial_id()
    fail_stale_trials(study)
    assert not stale and one.get_trial(silent).state == TrialState.RUNNING   # within the grace: nothing
    time.sleep(3.1)
    one.record_heartbeat(alive)
    fail_stale_trials(other)
    fail_stale_trials(study)
    assert one.get_trial(silent).state == TrialState.FAIL and one.get_trial(alive).state == TrialState.RUNNING
    assert one.get_trial(silent).user_attrs["fail_reason"] == "STALE" and stale == [0]
