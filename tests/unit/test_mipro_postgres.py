"""MIPRO workers on "several machines": a real PostgreSQL server started by the test, three
worker processes with their own working directories (no shared filesystem), one of them
killed mid-run. The study ends with exactly num_trials complete trials and the surviving
workers write the same artifact."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")
psycopg = pytest.importorskip("psycopg")

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

NUM_TRIALS = 12


def _binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@pytest.fixture
def postgres() -> Iterator[str]:
    """A throwaway PostgreSQL server on loopback; yields its SQLAlchemy URL. PostgreSQL
    refuses to run as root, so as root the server runs as ``nobody``."""
    bindir = _binaries()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries are not installed (apt-get install postgresql)")
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="lmforge-pg-"))
    if os.geteuid() == 0:
        runuser = shutil.which("runuser")
        if runuser is None:
            pytest.skip("running as root without runuser to start PostgreSQL as another user")
        nobody = pwd.getpwnam("nobody")
        os.chown(root, nobody.pw_uid, nobody.pw_gid)
        as_user = [runuser, "-u", "nobody", "--"]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    data = root / "data"
    initdb = [str(bindir / "initdb"), "-D", str(data), "-U", "lmforge", "--auth=trust"]
    subprocess.run(
        [*as_user, *initdb, "-E", "UTF8", "--no-sync"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    options = ["-h", "127.0.0.1", "-k", str(root), "-c", "fsync=off", "-c", "max_connections=60"]
    server = subprocess.Popen(
        [*as_user, str(bindir / "postgres"), "-D", str(data), "-p", str(port), *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    dsn = f"postgresql://lmforge@127.0.0.1:{port}/postgres"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                psycopg.connect(dsn, connect_timeout=2).close()
                break
            except psycopg.OperationalError:
                assert server.poll() is None, server.stderr.read() if server.stderr else ""
                assert time.monotonic() < deadline, "PostgreSQL did not start"
                time.sleep(0.2)
        yield dsn
    finally:
        server.send_signal(signal.SIGINT)  # fast shutdown: disconnects the clients
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        shutil.rmtree(root, ignore_errors=True)


WORKER = '''
"""One MIPRO worker: the program, data and fake LMs are built here, in each process."""
import json, re, socket, sys, time
from pathlib import Path

import lmforge as lf
from lmforge.artifact import to_artifact
from lmforge.optimizers import mipro_study
from lmforge.optimizers.mipro import MIPRO
from lmforge.testing import FunctionLM

storage, num_trials, machine = sys.argv[1], int(sys.argv[2]), sys.argv[3]
# Each worker plays a machine of its own; a dead machine's trial is released by optuna's
# heartbeat, shortened here so that the test does not wait a minute.
socket.gethostname = lambda: machine
mipro_study.HEARTBEAT_S, mipro_study.GRACE_S = 1, 6

TEAMS = {"refund": "billing", "invoice": "billing", "crash": "technical",
         "login": "technical", "price": "sales", "demo": "sales"}


def field(text, name):
    match = re.search(rf"\\[\\[ ## {name} ## \\]\\]\\n(.*)", text)
    return match.group(1).strip() if match else ""


def task(request):
    time.sleep(0.01)  # slow enough for the test to kill a worker mid-run
    system, last = str(request.messages[0]["content"]), str(request.messages[-1]["content"])
    ticket = field(last, "ticket")
    good = "variant 2" in system
    team = next((t for k, t in TEAMS.items() if k in ticket), "sales") if good else "sales"
    return f"[[ ## team ## ]]\\n{team}\\n\\n[[ ## completed ## ]]"


def prompt(request):
    system = str(request.messages[0]["content"])
    if "proposed_instruction" in system:
        return ("[[ ## proposed_instruction ## ]]\\n"
                f"Route the ticket, variant {request.rollout_id}.\\n\\n[[ ## completed ## ]]")
    return "[[ ## summary ## ]]\\nSupport tickets.\\n\\n[[ ## completed ## ]]"


def dataset(n, offset=0):
    words = list(TEAMS)
    return [lf.Example(ticket=f"{words[(i + offset) % 6]} problem {i + offset}",
                       team=TEAMS[words[(i + offset) % 6]]).with_inputs("ticket")
            for i in range(n)]


def metric(example, prediction, trace=None):
    return example.team == prediction.team


prompt_lm = FunctionLM(prompt, model="test/prompt")
optimizer = MIPRO(num_trials=num_trials, minibatch_size=4, num_instruction_candidates=3,
                  num_demo_sets=3, full_eval_steps=4, storage=storage,
                  prompt_lm=prompt_lm)
compiled = optimizer.compile(
    lf.Predict("ticket -> team: Literal['billing', 'technical', 'sales']"), dataset(8),
    metric=metric, valset=dataset(12, offset=3), lm=FunctionLM(task), seed=3, progress=False,
)
Path("artifact.json").write_text(
    json.dumps(to_artifact(compiled, compiled.artifact_meta), sort_keys=True))
Path("prompt_calls").write_text(str(len(prompt_lm.calls)))
'''


def _study(url: str) -> optuna.Study:
    url = url.replace("postgresql://", "postgresql+psycopg://", 1)
    (summary,) = optuna.get_all_study_summaries(url)
    return optuna.load_study(study_name=summary.study_name, storage=url)


def _complete(url: str) -> int:
    with contextlib.suppress(Exception):  # the study may not exist yet
        return len(_study(url).get_trials(states=(optuna.trial.TrialState.COMPLETE,)))
    return 0


def test_three_workers_share_one_study_and_survive_a_killed_one(
    postgres: str, tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    workers = []
    for number in range(3):
        home = tmp_path / f"machine-{number}"  # nothing shared between the workers' folders
        home.mkdir()
        (home / "worker.py").write_text(WORKER)
        env = {**subprocess_env, "LMFORGE_CACHE_DIR": str(home / "cache")}
        workers.append(
            subprocess.Popen(
                [sys.executable, "worker.py", postgres, str(NUM_TRIALS), f"machine-{number}"],
                cwd=home,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    victim = workers[0]
    deadline = time.monotonic() + 240
    while _complete(postgres) < 2:
        assert victim.poll() is None, victim.communicate()[1]
        assert time.monotonic() < deadline, "no trial completed"
        time.sleep(0.2)
    victim.kill()
    victim.wait()  # reaped: its pid is gone, so its running trial is released
    outcomes = [w.communicate(timeout=300) for w in workers[1:]]
    for worker, (_, err) in zip(workers[1:], outcomes, strict=True):
        assert worker.returncode == 0, err
    study = _study(postgres)
    states = [t.state for t in study.get_trials()]
    assert states.count(optuna.trial.TrialState.COMPLETE) == NUM_TRIALS
    first, second = (
        (tmp_path / f"machine-{n}" / "artifact.json").read_text(encoding="utf-8") for n in (1, 2)
    )
    assert first == second
    # The candidates (data summary, instruction proposals) were written once, by one worker:
    # the others restored them from the database.
    calls = [
        int((tmp_path / f"machine-{n}" / "prompt_calls").read_text())
        for n in (0, 1, 2)
        if (tmp_path / f"machine-{n}" / "prompt_calls").exists()
    ]
    assert sorted(calls)[:-1] == [0] * (len(calls) - 1)
    meta = json.loads(first)
    assert len([t for t in meta["meta"]["trials"] if t["kind"] == "minibatch"]) == NUM_TRIALS
    assert not (tmp_path / "machine-1" / "study.db").exists()
