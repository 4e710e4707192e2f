"""fastbp sweep / fastbp.sweep (issue 16): the space and sampler, bad input, and sweeps on a
real two-node Ray cluster on 127.0.0.1 (token authentication on): every result checked,
a worker killed mid-trial, an interrupted sweep resumed, the same seed giving the same
trials and results."""
from __future__ import annotations

import importlib.util
import json
import math
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import pytest

from fastbp.cli import main
from fastbp.sweep_space import (Choice, Grid, LogUniform, SpaceError, Uniform, check_space,
                                parse_spec, trial_spec)
from fastbp.sweep_trial import TrialStop, median_reference, run_trial

from conftest import SHARED, needs_fashion

# Not imported here: fastbp.sweep sets Ray's environment before Ray's first import.
pytestmark = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                                reason="the sweep extra (pip install 'fastbp[sweep]') is not installed")

DATA = ["--dataset", "fashion-mnist", "--data-dir", str(SHARED), "--no-download"]
#: One small sweep, run several ways below: 8 trials of a few short epochs.
SPACE = ["--lr", "loguniform:1e-3:1e-1", "--hidden", "choice:30x2,50", "--optimizer", "choice:sgd,adam",
         "--weight-decay", "0", "--epochs", "4", "--batch-size", "40"]
SWEEP = ["sweep", *DATA, *SPACE, "--trials", "8", "--seed", "7", "--train-size", "400", "--no-progress"]


# --------------------------------------------------------------------------- space and sampler


def test_parse_spec_forms():
    assert parse_spec("lr", "loguniform:1e-6:1e-2") == LogUniform(1e-6, 1e-2)
    assert parse_spec("lr", {"uniform": [0.1, 0.2]}) == Uniform(0.1, 0.2)
    assert parse_spec("hidden", "100x3-50") == [100, 100, 100, 50]
    assert parse_spec("hidden", "100,100") == [100, 100]
    assert parse_spec("hidden", "choice:100x2,50") == Choice(([100, 100], [50]))
    assert parse_spec("optimizer", "grid:SGD,adam") == Grid(("sgd", "adam"))
    assert parse_spec("batchnorm", "choice:true,false") == Choice((True, False))
    assert parse_spec("init", "0.01") == 0.01 and parse_spec("init", "relu") == "he"
    assert parse_spec("epochs", 5) == 5 and parse_spec("dropout", "uniform:0:1") == Uniform(0, 1)


@pytest.mark.parametrize("name, spec, words", [
    ("momentum", "0.9", "unknown parameter 'momentum'"),
    ("lr", "uniform:0.1:0.01", "low < high"),
    ("lr", "uniform:0.1:0.1", "low < high"),
    ("weight_decay", "loguniform:0:1e-4", "loguniform bounds must be > 0"),
    ("weight_decay", "uniform:-1:1", "weight_decay must be >= 0"),
    ("optimizer", "choice:", "empty"),
    ("optimizer", {"choice": []}, "at least one value"),
    ("optimizer", "choice:sgd,adamw", "expected one of"),
    ("epochs", "uniform:1:5", "takes no uniform"),
    ("hidden", "100x", "expected hidden sizes"),
    ("dropout", "uniform:0:1.5", "dropout must be < 1"),
    ("lr", "loguniform:1e-3", "two bounds"),
    ("lr", {"loguniform": [1e-3, 1e-2], "choice": [1]}, "exactly one"),
])
def test_parse_spec_errors(name, spec, words):
    with pytest.raises(SpaceError, match=words):
        parse_spec(name, spec)


def test_trials_depend_only_on_seed_and_index():
    space = check_space({"lr": "loguniform:1e-6:1e-2", "hidden": "choice:50,100x2",
                         "dropout": "uniform:0:0.5"})
    a = [trial_spec(space, 3, i) for i in range(10)]
    assert a == [trial_spec(space, 3, i) for i in range(10)]  # same seed, same trials
    assert trial_spec(space, 3, 7) == a[7]  # trial 7 whatever the trial count (resume, extend)
    assert a != [trial_spec(space, 4, i) for i in range(10)]
    assert len({(s["params"]["lr"], s["seed"]) for s in a}) == 10
    for s in a:
        assert 1e-6 <= s["params"]["lr"] <= 1e-2 and 0 <= s["params"]["dropout"] < 0.5
        assert s["params"]["hidden"] in ([50], [100, 100])
        assert s["params"]["optimizer"] == "sgd" and s["params"]["epochs"] == 50  # the book's
    # the dict's order does not change the draws
    reordered = dict(reversed(list(space.items())))
    assert [trial_spec(reordered, 3, i) for i in range(10)] == a


def test_grid_walks_the_product_in_order():
    space = check_space({"optimizer": "grid:sgd,adam", "batch_size": "grid:50,100,200"})
    got = [(s["params"]["batch_size"], s["params"]["optimizer"])
           for s in (trial_spec(space, 0, i) for i in range(7))]
    assert got == [(50, "sgd"), (50, "adam"), (100, "sgd"), (100, "adam"), (200, "sgd"),
                   (200, "adam"), (50, "sgd")]


def test_median_rule():
    ref = median_reference([[0.1, 0.5], [0.2, 0.6], [0.3, 0.2], [0.4, 0.7]], min_trials=4)
    assert ref == [0.25, 0.55]  # medians of the best-so-far: [.1 .2 .3 .4], [.5 .6 .3 .7]
    assert median_reference([[0.1]], min_trials=4) == [pytest.approx(math.nan, nan_ok=True)]
    stop = TrialStop(ref, grace=2)
    assert not stop.should_stop([0.0])  # within the grace epochs
    assert stop.should_stop([0.1, 0.5]) and not stop.should_stop([0.1, 0.6])
    assert not stop.should_stop([0.1, 0.1, 0.1])  # beyond the reference


def _tiny_data(rng):
    x = rng.random((200, 20)).astype(np.float32)
    t = (x[:, 0] * 3).astype(np.intp)  # learnable: 3 classes from the first feature
    return x[40:], t[40:], x[:40], t[:40]


def test_trial_follows_the_trainer_and_stops_early():
    data = _tiny_data(np.random.default_rng(0))
    space = check_space({"hidden": "8", "epochs": 6, "batch_size": 20, "lr": 0.1})
    spec = trial_spec(space, 0, 0)
    state = np.random.get_state()
    full = run_trial(spec, data)
    assert np.random.get_state()[1].tolist() == state[1].tolist()  # the caller's np.random untouched
    assert full["status"] == "ok" and full["epochs"] == 6 and full["steps"] == 6 * 160 // 20
    assert full == dict(run_trial(spec, data), seconds=full["seconds"])  # same spec, same result
    stopped = run_trial(spec, data, stop=TrialStop([2.0] * 6, grace=2))  # a median nobody beats
    assert stopped["status"] == "stopped" and stopped["epochs"] == 2
    assert stopped["val_acc_list"] == full["val_acc_list"][:2]
    bad = run_trial(trial_spec(check_space({"hidden": "8", "epochs": 1, "batch_size": 20,
                                            "lr": 1e30}), 0, 0), data)
    assert bad["status"] == "diverged" and "loss is nan" in bad["error"]  # a result, not a crash
    assert bad["epochs"] == 1 and bad["val_acc"] == bad["val_acc_list"][-1]


# --------------------------------------------------------------------------- a real Ray cluster

#: Ray's `ray start`, except that an address of 127.0.0.1 stays 127.0.0.1 (Ray swaps it for
#: the machine's network address), so both nodes listen on the loopback interface only.
_RAY_START = ("import sys, ray._private.services as s; s.resolve_ip_for_localhost = lambda h: h; "
              "from ray.scripts.scripts import main; sys.argv[0] = 'ray'; sys.exit(main())")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ports(*names):
    args = []
    for name in names:
        args += [f"--{name}", str(_free_port())]
    return args


def _processes():
    """``{pid: (parent pid, command line bytes)}`` of every process."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    out[int(entry)] = (ppid, fh.read())
            except (OSError, ValueError, IndexError):
                continue
    return out


def _cluster_pids(marker: str):
    """The processes whose command line names our temp folder, and their descendants (Ray
    renames its workers ``ray::...``, so they are found by parent)."""
    procs = _processes()
    found = {p for p, (_, cmd) in procs.items() if marker.encode() in cmd and p != os.getpid()}
    grew = True
    while grew:
        grew = False
        for p, (ppid, _) in procs.items():
            if ppid in found and p not in found:
                found.add(p)
                grew = True
    return found


def _stop(marker):
    """Stop our cluster by process id (SIGTERM, then SIGKILL), never by name."""
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 2.0)):
        pids = _cluster_pids(marker)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while _cluster_pids(marker) and time.monotonic() < deadline:
            time.sleep(0.1)


@pytest.fixture(scope="module")
def cluster():
    """A Ray head with 2 CPUs and a second node with 1 CPU, both on 127.0.0.1, with token
    authentication; yields ``(address, temp folder)``."""
    temp = tempfile.mkdtemp(prefix="fbr", dir="/tmp")  # short: Ray's socket paths are limited
    token = secrets.token_hex(16)
    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_USAGE_STATS_ENABLED")}
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token, RAY_USAGE_STATS_ENABLED="0")
    port = _free_port()
    common = ["--node-ip-address", "127.0.0.1", "--disable-usage-stats", "--temp-dir", temp]
    try:
        for args in (["--head", "--port", str(port), "--num-cpus", "2", "--include-dashboard", "false"],
                     ["--address", f"127.0.0.1:{port}", "--num-cpus", "1"]):
            for attempt in range(2):  # a port picked free may be taken by another process meanwhile
                ports = _ports("dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
                               "runtime-env-agent-port", "node-manager-port", "object-manager-port")
                done = subprocess.run([sys.executable, "-c", _RAY_START, "start", *args, *common, *ports],
                                      capture_output=True, text=True, timeout=180)
                if done.returncode == 0:
                    break
            assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        yield f"127.0.0.1:{port}", temp
    finally:
        _stop(temp)
        shutil.rmtree(temp, ignore_errors=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _results(out):
    lines = (out / "results.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _by_trial(results):
    return {r["trial"]: r for r in results}


def _same_outcome(a, b):
    """The same trials with the same parameters and bit-identical accuracies."""
    a, b = _by_trial(a), _by_trial(b)
    assert sorted(a) == sorted(b) == list(range(8))
    for i in a:
        for key in ("params", "seed", "status", "val_acc_list", "train_acc_list", "steps"):
            assert a[i][key] == b[i][key], (i, key)


@pytest.fixture(scope="module")
def first(cluster, tmp_path_factory):
    """The 8-trial sweep through --address: the reference the other runs must reproduce."""
    address, _ = cluster
    out = tmp_path_factory.mktemp("sweep") / "first"
    assert main([*SWEEP, "--address", address, "--out", str(out)]) == 0
    return out


@needs_fashion
def test_cluster_sweep_checks_every_result(first):
    from fastbp.checkpoint import load_checkpoint
    from fastbp.sweep import load_settings, read_results
    from fastbp.sweep_space import space_from_json

    settings = load_settings(first)
    space = space_from_json(settings["space"])
    results = _results(first)
    assert sorted(r["trial"] for r in results) == list(range(8))
    assert read_results(first) == results
    for r in results:
        spec = trial_spec(space, 7, r["trial"])
        assert r["params"] == spec["params"] and r["seed"] == spec["seed"]
        assert r["status"] == "ok" and r["error"] is None
        assert r["epochs"] == len(r["val_acc_list"]) == len(r["train_acc_list"]) == 4
        assert r["val_acc"] == r["val_acc_list"][-1] and r["train_acc"] == r["train_acc_list"][-1]
        assert r["steps"] == 4 * 320 // 40  # 320 training images after 80 are held out
        assert all(0 <= a <= 1 and (a * 80).is_integer() for a in r["val_acc_list"])  # 80 images
    assert len({r["pid"] for r in results}) >= 2  # several workers ran them
    rows = (first / "results.csv").read_text().splitlines()
    header = rows[0].split(",")
    table = [dict(zip(header, row.split(","))) for row in rows[1:]]
    assert len(table) == 8 and [int(row["rank"]) for row in table] == list(range(1, 9))
    vals = [float(row["val_acc"]) for row in table]
    assert vals == sorted(vals, reverse=True)
    best = _by_trial(results)[int(table[0]["trial"])]
    ckpt = load_checkpoint(first / "best.npz")
    assert ckpt.meta["trial"] == best["trial"] and ckpt.history.test_acc == best["val_acc_list"]
    net = ckpt.make_net()
    assert net.hidden_size_list == best["params"]["hidden"]
    assert (first / "best20.png").stat().st_size > 10000


@needs_fashion
def test_worker_killed_mid_trial_is_retried(cluster, first, tmp_path):
    address, temp = cluster
    killed = []
    stop = threading.Event()

    def kill_one():
        while not stop.is_set() and not killed:
            procs = _processes()
            for pid in _cluster_pids(temp):
                if procs.get(pid, (0, b""))[1].startswith(b"ray::run_batch"):
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    break
            time.sleep(0.02)

    killer = threading.Thread(target=kill_one)
    killer.start()
    try:
        out = tmp_path / "killed"
        code = main([*SWEEP, "--address", address, "--out", str(out), "--trials-per-task", "4"])
    finally:
        stop.set()
        killer.join()
    assert killed, "no Ray worker was seen running a trial"
    assert code == 0
    results = _results(out)
    assert killed[0] not in {r["pid"] for r in results}
    _same_outcome(results, _results(first))  # nothing lost, nothing run twice, same numbers


@needs_fashion
def test_interrupted_sweep_resumes_without_rerunning(cluster, tmp_path):
    from fastbp.sweep import load_settings
    from fastbp.sweep_space import space_from_json

    address, _ = cluster
    out = tmp_path / "interrupted"
    # Longer trials than `first` (30 epochs, 784-200x3-10), so that the interrupt lands mid-sweep.
    proc = subprocess.Popen([sys.executable, "-m", "fastbp", *SWEEP, "--address", address, "--out", str(out),
                             "--trials-per-task", "1", "--epochs", "30", "--hidden", "200x3"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # Ctrl-C's default action in the child, as in a terminal: a process
                            # started in the background (`cmd &`, some CI runners) inherits SIGINT
                            # ignored, and the interrupt would never arrive
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            path = out / "results.jsonl"
            if path.exists() and len(path.read_text().splitlines()) >= 2:
                break
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    before = (out / "results.jsonl").read_bytes()
    k = len(before.splitlines())
    if proc.returncode == 0 or k == 8:
        pytest.skip("the sweep finished before the interrupt arrived")
    assert proc.returncode == 130 and f"--resume {out}" in err, err
    assert 2 <= k < 8
    assert main(["sweep", "--resume", str(out), "--address", address, "--no-progress", *DATA]) == 0
    after = (out / "results.jsonl").read_bytes()
    assert after.startswith(before)  # the finished trials kept, byte for byte
    results = _results(out)
    assert sorted(r["trial"] for r in results) == list(range(8))  # each trial once: none ran again
    assert all(r["epochs"] == 30 and r["status"] == "ok" for r in results)
    space = space_from_json(load_settings(out)["space"])
    assert all(r["params"] == trial_spec(space, 7, r["trial"])["params"] for r in results)
    assert all(r["params"]["hidden"] == [200] * 3 for r in results)


@needs_fashion
def test_a_wrong_token_is_refused(cluster, tmp_path):
    address, _ = cluster
    env = dict(os.environ, RAY_AUTH_TOKEN=secrets.token_hex(16))
    done = subprocess.run([sys.executable, "-m", "fastbp", *SWEEP, "--address", address,
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("fastbp: error: cannot connect"), done.stderr
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- bad input
# (after the cluster tests: the cluster's token must be in the environment before Ray's first
# import in this process, and some of these import it)


def _one_error_line(capsys, code, words):
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("fastbp: error: "), err
    assert words in err[0], err


@pytest.mark.parametrize("args, words", [
    (["--lr", "uniform:0.1:0.01"], "low < high"),
    (["--weight-decay", "loguniform:0:1e-4"], "loguniform bounds must be > 0"),
    (["--optimizer", "choice:"], "empty"),
    (["--lr", "sometimes"], "expected a number"),
    (["--trials", "0"], "trials must be >= 1"),
    (["--address", "127.0.0.1:{port}"], "cannot reach a Ray cluster at 127.0.0.1:"),
    (["--resume", "{tmp}/nothing"], "holds no sweep"),
])
@needs_fashion
def test_bad_input_one_line_nothing_written(tmp_path, capsys, args, words):
    out = tmp_path / "out"
    args = [a.format(port=_free_port(), tmp=tmp_path) for a in args]
    where = [] if "--resume" in args else ["--out", str(out)]
    _one_error_line(capsys, main(["sweep", *DATA, *where, *args]), words)
    assert not out.exists()


@pytest.mark.parametrize("text, words", [
    ("trials = 3\n[space]\nlr = 'loguniform:1e-3:1e-1'\nmomentum = 0.9\n", "unknown parameter 'momentum'"),
    ("trails = 3\n", "unknown key 'trails'"),
    ("[space]\nlr = {loguniform = [1e-3, 1e-1]\n", "is not valid TOML"),
    ("[space]\nlr = {uniform = [0.2, 0.1]}\n", "low < high"),
])
def test_bad_toml(tmp_path, capsys, text, words):
    (tmp_path / "s.toml").write_text(text)
    out = tmp_path / "out"
    _one_error_line(capsys, main(["sweep", *DATA, "--config", str(tmp_path / "s.toml"), "--out", str(out)]),
                    words)
    assert not out.exists()


def test_ray_missing_names_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    _one_error_line(capsys, main(["sweep", *DATA, "--out", str(tmp_path / "out")]), 'pip install "fastbp[sweep]"')
    assert not (tmp_path / "out").exists()
