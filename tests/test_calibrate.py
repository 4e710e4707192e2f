"""Twin thresholds that follow the machine: ``fastbp calibrate``, the calibration file, and
compiled code (and its disk cache) that follows the thresholds."""
import json
import os
import subprocess
import sys
import textwrap
import warnings

import numba
import pytest

from conftest import compiled_only
from fastbp import cli, kernels as K
from fastbp.calibrate import MEASURED, Calibration, Timing, calibrate, crossover, save
from fastbp.kernels import NEVER, SOURCE_TWIN_THRESHOLDS, ThresholdWarning
from fastbp.kernels._compile import load_machine_thresholds

DEFAULT_ORIGIN = "one thread" if numba.config.NUMBA_NUM_THREADS == 1 else "source"


def _timings(pairs):
    return [Timing(1 << (10 + i), s, p) for i, (s, p) in enumerate(pairs)]


def test_crossover_is_where_parallel_stays_ahead():
    t = _timings([(1, 3), (2, 3), (4, 3), (8, 4), (16, 6)])
    assert crossover(t) == 1 << 12
    # a lucky parallel sample below the crossover does not count: it is slower after it
    t = _timings([(1, 0.5), (2, 3), (4, 3), (8, 4), (16, 6)])
    assert crossover(t) == 1 << 12
    # a tie above it (within the tolerance) does not push the threshold up ...
    t = _timings([(1, 3), (2, 3), (4, 3), (8, 8.4), (16, 6)])
    assert crossover(t) == 1 << 12
    # ... a clear loss does
    t = _timings([(1, 3), (2, 3), (4, 3), (8, 9.6), (16, 6)])
    assert crossover(t) == 1 << 14
    # never faster at the largest size: never parallel
    assert crossover(_timings([(1, 3), (2, 3), (4, 5)])) == NEVER
    assert crossover([]) == NEVER


def _entry(values, machine=None):
    return {"machine": machine or K.machine_key(), "thresholds": values}


def _write(path, entries):
    path.write_text(json.dumps({"machines": entries}))
    return str(path)


def test_calibration_file_for_this_machine_is_used(tmp_path):
    values = dict(SOURCE_TWIN_THRESHOLDS, PARALLEL_MIN_ELEMENTS=12345)
    other = dict(K.machine_key(), threads=K.machine_key()["threads"] + 1)
    path = _write(tmp_path / "t.json", [_entry(dict(SOURCE_TWIN_THRESHOLDS), other),
                                        _entry(values)])
    got = load_machine_thresholds(path)
    assert (got.origin, got.values, got.note) == ("calibrated", values, None)


def test_no_file_or_no_entry_for_this_machine_gives_the_defaults(tmp_path):
    got = load_machine_thresholds(str(tmp_path / "absent.json"))
    assert (got.origin, got.note) == (DEFAULT_ORIGIN, None)
    assert got.values == (SOURCE_TWIN_THRESHOLDS if DEFAULT_ORIGIN == "source"
                          else dict.fromkeys(SOURCE_TWIN_THRESHOLDS, NEVER))
    for change in ({"cpu": "another"}, {"threading_layer": "workqueue"},
                   {"threads": K.machine_key()["threads"] + 1}):
        path = _write(tmp_path / "t.json", [_entry(dict(SOURCE_TWIN_THRESHOLDS, SMALL=1),
                                                   dict(K.machine_key(), **change))])
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # another machine's entry is no error
            got = load_machine_thresholds(path)
        assert got.origin == DEFAULT_ORIGIN and "no entry for this CPU" in got.note


@pytest.mark.parametrize("text", ["{not json", "[]", '{"machines": 3}', '{"other": []}'])
def test_unreadable_calibration_file_warns_and_gives_the_defaults(tmp_path, text):
    path = tmp_path / "t.json"
    path.write_text(text)
    with pytest.warns(ThresholdWarning, match="cannot use the calibration file.*fastbp calibrate"):
        got = load_machine_thresholds(str(path))
    assert got.origin == DEFAULT_ORIGIN and "unreadable" in got.note


@pytest.mark.parametrize("bad", [{"PARALLEL_MIN_ELEMENTS": 0}, {"PARALLEL_MIN_ELEMENTS": -5},
                                 {"PARALLEL_MIN_ELEMENTS": True}, {"PARALLEL_MIN_ROWS": 2.5},
                                 {"PARALLEL_MIN_ROWS": None}, {"UNKNOWN": 3}])
def test_invalid_thresholds_warn_and_give_the_defaults(tmp_path, bad):
    values = dict(SOURCE_TWIN_THRESHOLDS, **bad)
    path = _write(tmp_path / "t.json", [_entry(values)])
    with pytest.warns(ThresholdWarning, match="not positive integers"):
        got = load_machine_thresholds(path)
    assert got.origin == DEFAULT_ORIGIN and "invalid" in got.note
    missing = dict(SOURCE_TWIN_THRESHOLDS)
    del missing["PARALLEL_MIN_ROWS"]  # a file from a fastbp with fewer thresholds
    with pytest.warns(ThresholdWarning):
        load_machine_thresholds(_write(tmp_path / "t.json", [_entry(missing)]))


def test_save_replaces_this_machines_entry_and_keeps_the_others(tmp_path):
    other = dict(K.machine_key(), cpu="another")
    path = _write(tmp_path / "t.json", [_entry({"kept": 1}, other), _entry({"old": 1})])
    result = Calibration(dict(SOURCE_TWIN_THRESHOLDS, PARALLEL_MIN_ROWS=7),
                         {"relu_forward": _timings([(1, 2)])})
    assert save(result, path) == path
    entries = json.loads((tmp_path / "t.json").read_text())["machines"]
    assert [e["machine"] for e in entries] == [other, K.machine_key()]
    assert entries[0]["thresholds"] == {"kept": 1}
    assert entries[1]["thresholds"]["PARALLEL_MIN_ROWS"] == 7
    assert entries[1]["measured"] == {"relu_forward": [{"size": 1024, "serial": 1,
                                                         "parallel": 2}]}
    assert load_machine_thresholds(path).values["PARALLEL_MIN_ROWS"] == 7
    # a broken file is replaced; nothing is left behind
    (tmp_path / "t.json").write_text("{broken")
    save(result, path)
    assert len(json.loads((tmp_path / "t.json").read_text())["machines"]) == 1
    assert sorted(os.listdir(tmp_path)) == ["t.json"]


def test_save_errors(tmp_path, monkeypatch):
    result = Calibration(dict(SOURCE_TWIN_THRESHOLDS), {})
    monkeypatch.setenv("FASTBP_THRESHOLDS", "")
    with pytest.raises(ValueError, match="FASTBP_THRESHOLDS is empty.*--out"):
        save(result)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OSError):
        save(result, blocker / "t.json")  # its folder is a file


@compiled_only
def test_calibrate_measures_three_thresholds_and_keeps_the_others():
    lines = []
    result = calibrate(samples=1, min_seconds=1e-4, progress=lines.append)
    assert set(result.thresholds) == set(SOURCE_TWIN_THRESHOLDS)
    assert set(result.timings) == {k for measured in MEASURED.values() for k in measured}
    for name, value in result.thresholds.items():
        if name in MEASURED:  # the latest crossover of the threshold's kernels
            crossovers = [crossover(result.timings[k]) for k in MEASURED[name]]
            assert value == max(crossovers)
            assert value == NEVER or any(value == t.size for k in MEASURED[name]
                                         for t in result.timings[k])
        else:
            assert value == (NEVER if numba.config.NUMBA_NUM_THREADS == 1
                             else SOURCE_TWIN_THRESHOLDS[name])
    assert all(t.serial > 0 and t.parallel > 0 for ts in result.timings.values() for t in ts)
    assert len(lines) == 1 + sum(1 + len(ts) for ts in result.timings.values())
    assert numba.get_num_threads() == numba.config.NUMBA_NUM_THREADS


CHILD = textwrap.dedent(r"""
    import json, re
    import numpy as np
    from fastbp import kernels as K
    x = np.ones(10, np.float32)
    K.relu_forward(x, x)
    current = K.machine_thresholds()
    ir = "".join(K.relu_forward.inspect_llvm().values())
    print(json.dumps({"origin": current.origin, "values": current.values,
                      "hits": sum(K.relu_forward.stats.cache_hits.values()),
                      "misses": sum(K.relu_forward.stats.cache_misses.values()),
                      # `size >= 12345`, or LLVM's `size > 12344`
                      "constant": re.search(r"i64 %[\w.]+, 1234[45]\b|i64 1234[45]\b",
                                            ir) is not None}))
""")


def _child(env_extra, cache):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), **env_extra)
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@compiled_only
def test_compiled_kernels_and_their_cache_follow_the_thresholds(tmp_path):
    """A process compiles its kernels with the thresholds it read at import, and a cache
    entry compiled with other thresholds is not loaded (Numba's own key ignores the values
    of globals: without fastbp's key the second process would reuse the first's code)."""
    values = dict(SOURCE_TWIN_THRESHOLDS, PARALLEL_MIN_ELEMENTS=12345)
    calibrated = {"FASTBP_THRESHOLDS": _write(tmp_path / "t.json", [_entry(values)])}
    source = {"FASTBP_THRESHOLDS": ""}
    cache = tmp_path / "cache"
    first = _child(source, cache)
    assert (first["origin"], first["misses"], first["constant"]) == (DEFAULT_ORIGIN, 1, False)
    second = _child(calibrated, cache)
    assert second["origin"] == "calibrated" and second["values"] == values
    assert (second["hits"], second["misses"], second["constant"]) == (0, 1, True)
    for env in (source, calibrated):  # both load from disk now, each its own entry (the
        again = _child(env, cache)     # machine code of a loaded entry has no IR to inspect)
        assert (again["hits"], again["misses"]) == (1, 0)


@compiled_only
def test_one_thread_pool_never_runs_a_parallel_twin(tmp_path):
    got = _child({"NUMBA_NUM_THREADS": "1", "FASTBP_THRESHOLDS": ""}, tmp_path)
    assert got["origin"] == "one thread"
    assert got["values"] == dict.fromkeys(SOURCE_TWIN_THRESHOLDS, NEVER)


@compiled_only
def test_cli_calibrate_writes_and_show_reports(tmp_path, capsys):
    path = tmp_path / "sub" / "t.json"
    assert cli.main(["calibrate", "--out", str(path), "--samples", "1"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {path}" in out and "PARALLEL_MIN_HEAVY_ELEMENTS = " in out
    entry = json.loads(path.read_text())["machines"][0]
    assert entry["machine"] == K.machine_key() and set(entry["thresholds"]) == set(
        SOURCE_TWIN_THRESHOLDS)
    env = dict(os.environ, FASTBP_THRESHOLDS=str(path))
    show = subprocess.run([sys.executable, "-m", "fastbp", "calibrate", "--show"], env=env,
                          capture_output=True, text=True, timeout=600)
    assert show.returncode == 0, show.stderr
    assert "origin: calibrated" in show.stdout and str(path) in show.stdout
    for name, value in entry["thresholds"].items():
        assert (f"{name} = never" if value == NEVER else f"{name} = {value:,}") in show.stdout
    # --dry-run writes nothing; an unwritable --out is one error line, exit 2
    path.unlink()
    assert cli.main(["calibrate", "--out", str(path), "--samples", "1", "--dry-run"]) == 0
    assert not path.exists()
    capsys.readouterr()
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert cli.main(["calibrate", "--out", str(blocker / "t.json"), "--samples", "1"]) == 2
    assert "fastbp: error:" in capsys.readouterr().err


FAST_DISPATCH_CHILD = textwrap.dedent("""
    import json, sys
    import numpy as np
    from numba.core import dispatcher
    from fastbp import kernels as K
    slow = []
    original = dispatcher.Dispatcher.typeof_pyval
    def spy(self, value):  # Numba types an argument in Python only off its fast path
        slow.append(self.py_func.__name__)
        return original(self, value)
    dispatcher.Dispatcher.typeof_pyval = spy
    x = np.linspace(-1, 1, 50).reshape(5, 10)
    out, v = np.empty_like(x), np.ones_like(x)
    img = np.ones((2, 1, 6, 6)); W = np.ones((2, 1, 3, 3)); conv = np.empty((2, 2, 4, 4))
    calls = [lambda: K.relu_forward(x, out), lambda: K.sigmoid_forward(x, out),
             lambda: K.tanh_backward(x, x, out), lambda: K.sgd_decay_update(out, x, 0.1),
             lambda: K.adam_update(out, x, v.copy(), v.copy(), 0.1, 0.9, 0.99),
             lambda: K.conv2d_forward(img, W, np.zeros(2), 1, 0, conv),
             lambda: K.optimizer_update(K.optimizers.ADAM, out, x, v.copy(), v.copy(), 0.1,
                                        0.9, 0.99, 0.0)]
    for call in calls * 2:
        call()  # compiled (or loaded), one after the other
    slow.clear()
    for call in calls:
        call()
    print(json.dumps(slow))
""")


@compiled_only
@pytest.mark.parametrize("thresholds", ["source", "calibrated"])
def test_kernels_called_from_python_stay_on_numbas_fast_dispatch(tmp_path, thresholds):
    """Every public kernel's omitted ``min_parallel`` is the one MACHINE_DEFAULT: Numba
    tells omitted integer defaults apart by type only (numba/numba#6173), and with each
    kernel's own threshold as its default, the second kernel called took Numba's slow
    dispatch path on every call (20-80 us), for instance Adam after ReLU once calibrated."""
    env = {"FASTBP_THRESHOLDS": ""}
    if thresholds == "calibrated":
        values = dict(SOURCE_TWIN_THRESHOLDS, PARALLEL_MIN_ELEMENTS=1 << 17,
                      PARALLEL_MIN_HEAVY_ELEMENTS=1 << 15, CONV_PARALLEL_MIN_MACS=102400)
        env["FASTBP_THRESHOLDS"] = _write(tmp_path / "t.json", [_entry(values)])
    out = subprocess.run([sys.executable, "-c", FAST_DISPATCH_CHILD], capture_output=True,
                         text=True, timeout=900, env=dict(os.environ, **env))
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
