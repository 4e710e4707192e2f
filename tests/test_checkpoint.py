"""Crash safety of fastbp.checkpoint: a write killed midway, damaged files; format version 2
(a multi-layer network with its optimizer) and the version-1 files of two-layer networks.

A checkpoint is written to a temporary file and renamed over the old one, so a process
killed while writing (SIGKILL: no handler, no cleanup) leaves the previous checkpoint
intact. Every damaged file (cut short, a byte changed, well-formed but inconsistent) is a
ValueError naming the file; nothing is loaded with pickle.
"""
import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest

from fastbp import optimizers
from fastbp.checkpoint import History, hyperparameters, load_checkpoint, save_checkpoint
from fastbp.multilayer import MultiLayerNet, MultiLayerNetExtend
from fastbp.network import TwoLayerNet


class Net:
    """What save_checkpoint needs of a network: a book-style ``params`` dict."""

    def __init__(self, d=6, h=4, c=3, seed=0, dtype=np.float32):
        rng = np.random.default_rng(seed)
        self.params = {"W1": rng.standard_normal((d, h)).astype(dtype),
                       "b1": rng.standard_normal(h).astype(dtype),
                       "W2": rng.standard_normal((h, c)).astype(dtype),
                       "b2": rng.standard_normal(c).astype(dtype)}


def history(steps=5):
    return History(step_loss=[2.0 - 0.1 * i for i in range(steps)], epoch_step=[steps],
                   epoch_loss=[1.5], train_acc=[0.5], test_acc=[0.25], epoch_seconds=[0.1])


def same(ckpt, net, hist):
    return (all(np.array_equal(ckpt.params[k], net.params[k]) for k in net.params)
            and ckpt.history == hist)


# -- SIGKILL in the middle of a write -------------------------------------------------------

WRITER = textwrap.dedent("""
    import os, sys, time
    import numpy as np
    from fastbp.checkpoint import History, save_checkpoint

    path, size = sys.argv[1], int(sys.argv[2])
    rng = np.random.default_rng(1)
    class Net:
        params = {"W1": rng.standard_normal((size, 50)).astype(np.float32),
                  "b1": np.zeros(50, np.float32),
                  "W2": rng.standard_normal((50, 10)).astype(np.float32),
                  "b2": np.zeros(10, np.float32)}
    hist = History(step_loss=[1.0] * 7)

    # The complete size of this checkpoint, written elsewhere first.
    full = save_checkpoint(os.path.join(os.path.dirname(path), "full.npz"), Net, hist, seed=2)
    half = os.path.getsize(full) // 2

    class Stalling:
        # The checkpoint's file object: passes writes through, and once more than half of
        # the file is on disk, announces it and stalls there until killed.
        def __init__(self, fh):
            self._fh, self.written = fh, 0
        def write(self, b):
            n = self._fh.write(b)
            self.written += len(b)
            if self.written > half:
                self._fh.flush()
                os.fsync(self._fh.fileno())
                print("MIDWRITE", self.written, os.path.getsize(full), flush=True)
                time.sleep(600)
            return n
        def __getattr__(self, name):
            return getattr(self._fh, name)
        def __enter__(self):
            return self
        def __exit__(self, *exc):
            return self._fh.__exit__(*exc)

    real_fdopen = os.fdopen
    os.fdopen = lambda *a, **k: Stalling(real_fdopen(*a, **k))
    save_checkpoint(path, Net, hist, seed=2)
    print("FINISHED", flush=True)  # never reached: killed above
""")


def test_sigkill_mid_write_leaves_previous_checkpoint(tmp_path):
    path = tmp_path / "ckpt.npz"
    old_net, old_hist = Net(seed=5), history(3)
    save_checkpoint(path, old_net, old_hist, seed=1)
    before = path.read_bytes()

    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), "2000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 300)  # the writer is mid-write
        line = proc.stdout.readline() if ready else "(timed out)"
        assert line.startswith("MIDWRITE"), (line, proc.stderr.read() if proc.poll() else "")
        written, full_size = map(int, line.split()[1:])
        temps = list(tmp_path.glob(".ckpt.npz.*.tmp"))
        assert len(temps) == 1
        on_disk = temps[0].stat().st_size
        assert 0 < on_disk <= written < full_size  # really in the middle of the write
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert "FINISHED" not in proc.stdout.read()

    assert path.read_bytes() == before  # the previous checkpoint, untouched
    assert same(load_checkpoint(path), old_net, old_hist)
    # The half-written temporary is left behind (nothing ran after SIGKILL); it is never
    # mistaken for a checkpoint: loading it is a clear error.
    with pytest.raises(ValueError, match=temps[0].name):
        load_checkpoint(temps[0])
    # The next save still works and replaces the old checkpoint.
    new_net, new_hist = Net(seed=6), history(4)
    save_checkpoint(path, new_net, new_hist, seed=1)
    assert same(load_checkpoint(path), new_net, new_hist)


# -- damaged files --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def good(tmp_path_factory):
    path = tmp_path_factory.mktemp("good") / "good.npz"
    net, hist = Net(d=3, h=2, c=2), history(2)
    save_checkpoint(path, net, hist, seed=3, dataset="blobs")
    return path.read_bytes(), net, hist


def outcome(path):
    """'ok' with the checkpoint, or the ValueError's message; anything else propagates."""
    try:
        return "ok", load_checkpoint(path)
    except ValueError as exc:
        return "error", str(exc)


def test_every_truncation_is_an_error_naming_the_file(good, tmp_path):
    raw, _, _ = good
    path = tmp_path / "cut.npz"
    for n in range(len(raw)):
        path.write_bytes(raw[:n])
        kind, res = outcome(path)
        assert kind == "error" and "cut.npz" in res, (n, kind)


def test_every_byte_changed_loads_the_same_or_is_an_error(good, tmp_path):
    """Flipping any one byte: the zip CRCs and the checks after unzipping catch every change
    to the content; a change in an unused field (a timestamp) loads the same checkpoint."""
    raw, net, hist = good
    path = tmp_path / "flip.npz"
    loaded = errors = 0
    for i in range(len(raw)):
        bad = bytearray(raw)
        bad[i] ^= 0xFF
        path.write_bytes(bytes(bad))
        kind, res = outcome(path)
        if kind == "ok":
            loaded += 1
            assert same(res, net, hist) and res.meta["dataset"] == "blobs", i
        else:
            errors += 1
            assert "flip.npz" in res, (i, res)
    assert errors > len(raw) // 2 and loaded > 0, (errors, loaded)


def write_npz(path, **arrays):
    with open(path, "wb") as fh:  # np.savez(path) would append ".npz" to other names
        np.savez(fh, **arrays)
    return path


def valid_arrays(d=3, h=2, c=2, **meta_changes):
    meta = {"format": "fastbp-checkpoint", "version": 1, "input_size": d, "hidden_size": h,
            "output_size": c, "dtype": "float32", "seed": 0}
    meta.update(meta_changes)
    arrays = {"param_W1": np.zeros((d, h), np.float32), "param_b1": np.zeros(h, np.float32),
              "param_W2": np.zeros((h, c), np.float32), "param_b2": np.zeros(c, np.float32),
              **{k: np.asarray(v, np.int64 if k == "history_epoch_step" else np.float64)
                 for k, v in history(2).to_arrays().items()}}
    arrays["meta"] = np.array(json.dumps(meta))
    return arrays


@pytest.mark.parametrize("change, words", [
    (dict(meta=np.array("[1, 2]")), "not a fastbp checkpoint"),
    (dict(meta=np.array("{not json")), "not a fastbp checkpoint"),
    (dict(meta=np.array(["{}", "{}"])), "not a fastbp checkpoint"),
    (dict(meta=np.array(json.dumps({"format": "other"}))), "not a fastbp checkpoint"),
    (dict(param_W1=None), "missing or bad entry"),
    (dict(history_train_acc=None), "missing or bad entry"),
    (dict(param_W1=np.zeros((3, 5), np.float32)), "W1"),
    (dict(param_b2=np.zeros((), np.float32)), "b2"),
    (dict(param_W2=np.array([["a", "b"], ["c", "d"]])), "W2"),
    (dict(history_step_loss=np.zeros((2, 2))), "step_loss"),
    (dict(history_step_loss=np.array(["a", "b"])), "step_loss"),
    (dict(history_test_acc=np.zeros(5)), "different lengths"),
    # The arrays' dtype must be the one meta names (a float32 network would cast them).
    (dict(param_W1=np.zeros((3, 2), np.float64)), "W1 is float64 of shape (3, 2), expected float32"),
    (dict(param_b2=np.zeros(2, np.float16)), "b2 is float16"),
    # The history's evaluation steps: whole, increasing, within the recorded steps.
    (dict(history_epoch_step=np.array([3])), "epoch_step [3] is not an increasing list of steps in 1..2"),
    (dict(history_epoch_step=np.array([2.0])), "epoch_step"),
    # The run settings a resumed run would use as they are.
    ("batch_size=0", "meta batch_size is 0, expected an integer >= 1"),
    ("seed=-1", "meta seed is -1"),
    ("lr='0.1'", "meta lr is '0.1', expected a positive number"),
    ("iterations=1.5", "meta iterations is 1.5"),
    ("eval_every=True", "meta eval_every is True"),
    ("version", "format version"),
    ("version-str", "format version"),
    ("hidden", "hidden_size"),
    ("dtype", "dtype"),
    ("no-input", "input_size"),
])
def test_inconsistent_checkpoint_is_an_error_naming_the_file(tmp_path, change, words):
    if change == "version":
        arrays = valid_arrays(version=99)
    elif change == "version-str":
        arrays = valid_arrays(version="1")
    elif change == "hidden":
        arrays = valid_arrays(hidden_size=True)
    elif change == "dtype":
        arrays = valid_arrays(dtype="float16")
    elif change == "no-input":
        arrays = valid_arrays(input_size=None)
    elif isinstance(change, str):
        key, value = change.split("=")
        arrays = valid_arrays(**{key: eval(value)})
    else:
        arrays = valid_arrays()
        for k, v in change.items():
            if v is None:
                del arrays[k]
            else:
                arrays[k] = v
    path = write_npz(tmp_path / "bad.ckpt", **arrays)
    with pytest.raises(ValueError) as info:
        load_checkpoint(path)
    assert "bad.ckpt" in str(info.value) and words in str(info.value), str(info.value)


def test_valid_hand_written_checkpoint_loads(tmp_path):
    c = load_checkpoint(write_npz(tmp_path / "ok.ckpt", **valid_arrays()))
    assert c.make_net().params["W1"].shape == (3, 2) and c.step == 2


def test_pickled_object_arrays_are_refused_without_unpickling(tmp_path):
    class Boom:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))
    arrays = valid_arrays()
    arrays["param_W1"] = np.array([Boom()], dtype=object)
    path = write_npz(tmp_path / "evil.npz", **arrays)
    with pytest.raises(ValueError, match="evil.npz"):
        load_checkpoint(path)
    assert not (tmp_path / "pwned").exists()
    assert zipfile.is_zipfile(path)


def test_directory_or_unreadable_path(tmp_path):
    with pytest.raises(ValueError, match=str(tmp_path.name)):
        load_checkpoint(tmp_path)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.npz")



# -- format version 2: a multi-layer network with its optimizer ------------------------------

BATCH = (np.random.default_rng(0).random((4, 3)), np.array([0, 1, 1, 0]))


def tiny_multilayer(optimizer="Adam", steps=2):
    """A 3-2-2 MultiLayerNetExtend with BatchNorm and Dropout after `steps` steps."""
    net = MultiLayerNetExtend(3, [2], 2, use_batchnorm=True, use_dropout=True, seed=0)
    opt = getattr(optimizers, optimizer)()
    for _ in range(steps):
        net.train_step(*BATCH, opt)
    return net, opt


def same_v2(ckpt, net, opt, hist):
    """The checkpoint rebuilds `net` and `opt` exactly, and holds `hist`."""
    a, b = ckpt.make_net().get_state(), net.get_state()
    sa, sb = ckpt.make_optimizer().state_dict(), opt.state_dict()
    return (a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
            and sa.keys() == sb.keys() and all(np.array_equal(sa[k], sb[k]) for k in sa)
            and ckpt.history == hist)


@pytest.fixture(scope="module")
def good_v2(tmp_path_factory):
    path = tmp_path_factory.mktemp("good") / "good.npz"
    net, opt = tiny_multilayer()
    hist = history(2)
    save_checkpoint(path, net, hist, optimizer=opt, seed=3, dataset="blobs")
    return path.read_bytes(), net, opt, hist


@pytest.mark.parametrize("name", ["SGD", "Momentum", "Nesterov", "AdaGrad", "RMSprop", "Adam"])
def test_v2_roundtrip_continues_exactly(tmp_path, name):
    net, opt = tiny_multilayer(name)
    path = save_checkpoint(tmp_path / "c.npz", net, history(2), optimizer=opt, seed=3)
    c = load_checkpoint(path)
    assert c.meta["version"] == 2 and c.network == "MultiLayerNetExtend" and c.meta["optimizer"] == name
    assert same_v2(c, net, opt, history(2))
    assert c.settings == dict(network="MultiLayerNetExtend", hidden_size=[2], activation="relu",
                              weight_init_std="relu", weight_decay=0.0, dropout=0.5, batchnorm=True,
                              optimizer=name, optimizer_param={k: v for k, v in hyperparameters(opt).items()
                                                               if k != "lr"})
    assert sorted(c.params) == sorted(net.params)
    # The rebuilt pair takes the same next steps as the original, bit for bit.
    net2, opt2 = c.make_net(), c.make_optimizer()
    for _ in range(3):
        assert net2.train_step(*BATCH, opt2) == net.train_step(*BATCH, opt)
    for k, v in net.get_state().items():
        np.testing.assert_array_equal(net2.get_state()[k], v)
    assert c.make_optimizer(lr=0.5).lr == 0.5


def test_v2_without_optimizer_and_plain_multilayer(tmp_path):
    net = MultiLayerNet(3, [4, 4], 2, activation="sigmoid", weight_init_std=0.3,
                        weight_decay_lambda=0.1, dtype=np.float32, seed=None)
    c = load_checkpoint(save_checkpoint(tmp_path / "c.npz", net, History()))
    assert c.network == "MultiLayerNet" and c.optimizer_state is None and c.meta["net_seed"] is None
    rebuilt = c.make_net()
    assert type(rebuilt) is MultiLayerNet and rebuilt.dtype == np.float32
    assert (rebuilt.activation, rebuilt.weight_init_std, rebuilt.weight_decay_lambda) == ("sigmoid", 0.3, 0.1)
    for k in net.params:
        np.testing.assert_array_equal(rebuilt.params[k], net.params[k])
    with pytest.raises(ValueError, match="holds no optimizer"):
        c.make_optimizer()


def test_two_layer_checkpoints_keep_format_1(tmp_path, good):
    net = TwoLayerNet(3, 2, 2, seed=0)
    c = load_checkpoint(save_checkpoint(tmp_path / "c.npz", net, History(), lr=0.3))
    assert c.meta["version"] == 1 and "network" not in c.meta and c.net_state is None
    with np.load(tmp_path / "c.npz") as z:
        assert sorted(k for k in z.files if k.startswith("param_")) == ["param_W1", "param_W2", "param_b1", "param_b2"]
    assert c.network == "TwoLayerNet" and c.settings["optimizer"] == "SGD" and c.settings["hidden_size"] == [2]
    opt = c.make_optimizer()
    assert type(opt) is optimizers.SGD and opt.lr == 0.3
    # A file written before format 2 existed (the fixture's bytes: no lr in it).
    path = tmp_path / "old.npz"
    path.write_bytes(good[0])
    old = load_checkpoint(path)
    assert old.make_optimizer().lr == 0.1 and old.make_net().params["W1"].shape == (3, 2)


def test_save_checkpoint_refusals(tmp_path):
    net, opt = tiny_multilayer(steps=0)
    with pytest.raises(ValueError, match="meta may not set dtype, optimizer_param"):
        save_checkpoint(tmp_path / "c.npz", net, History(), optimizer=opt, dtype="x", optimizer_param={})
    with pytest.raises(ValueError, match="optimizer must be None or SGD, got Adam"):
        save_checkpoint(tmp_path / "c.npz", TwoLayerNet(3, 2, 2), History(), optimizer=optimizers.Adam())

    class BookSGD:
        lr = 0.1

    with pytest.raises(TypeError, match="one of fastbp.optimizers"):
        save_checkpoint(tmp_path / "c.npz", net, History(), optimizer=BookSGD())
    assert not list(tmp_path.iterdir())


def test_v2_every_truncation_is_an_error(good_v2, tmp_path):
    raw = good_v2[0]
    path = tmp_path / "cut.npz"
    for n in range(len(raw)):
        path.write_bytes(raw[:n])
        kind, res = outcome(path)
        assert kind == "error" and "cut.npz" in res, (n, kind)


def test_v2_changed_bytes_load_the_same_or_are_an_error(good_v2, tmp_path):
    """Every 5th byte (all of them take ~15 s): see the version-1 test above."""
    raw, net, opt, hist = good_v2
    path = tmp_path / "flip.npz"
    loaded = errors = 0
    for i in range(0, len(raw), 5):
        bad = bytearray(raw)
        bad[i] ^= 0xFF
        path.write_bytes(bytes(bad))
        kind, res = outcome(path)
        if kind == "ok":
            loaded += 1
            assert same_v2(res, net, opt, hist) and res.meta["dataset"] == "blobs", i
        else:
            errors += 1
            assert "flip.npz" in res, (i, res)
    assert errors > len(raw) // 10 and loaded > 0, (errors, loaded)


def v2_arrays(good_v2, tmp_path):
    path = tmp_path / "src.npz"
    path.write_bytes(good_v2[0])
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    return arrays, json.loads(str(arrays["meta"][()]))


@pytest.mark.parametrize("change, words", [
    (dict(network="ConvNet"), "meta network is 'ConvNet'"),
    (dict(hidden_size=[]), "meta hidden_size"),
    (dict(hidden_size=[2, 2]), "configuration or state does not fit"),
    (dict(input_size=0), "meta input_size"),
    (dict(dtype="float16"), "meta dtype"),
    (dict(dtype="float32"), "configuration or state does not fit"),
    (dict(use_dropout="yes"), "use_dropout"),
    (dict(dropout_ratio=1.5), "configuration or state does not fit"),
    (dict(activation="tanh"), "configuration or state does not fit"),
    (dict(net_seed=-1), "net_seed"),
    (dict(optimizer="AdamW"), "meta optimizer is 'AdamW'"),
    (dict(optimizer="SGD"), "optimizer's settings or state do not fit"),
    (dict(optimizer=None), "optimizer arrays but no optimizer"),
    (dict(optimizer_param={"lr": "0.1"}), "meta optimizer_param"),
    (dict(optimizer_param={"lr": -1.0}), "optimizer's settings or state do not fit"),
    ("del state_running_var1", "configuration or state does not fit"),
    ("del optim_iter", "optimizer's settings or state do not fit"),
    ("state_W1 3x3", "configuration or state does not fit"),
    ("state_dropout_step float", "configuration or state does not fit"),
    ("state_W1 float32", "state['W1'] is float32, the network float64"),
    ("optim_m/W1 3x3", "optimizer"),
    ("optim_m/W9", "optimizer"),
])
def test_v2_inconsistent_is_an_error_naming_the_file(good_v2, tmp_path, change, words):
    arrays, meta = v2_arrays(good_v2, tmp_path)
    if isinstance(change, dict):
        meta.update(change)
    elif change.startswith("del "):
        del arrays[change[4:]]
    elif change == "state_W1 3x3":
        arrays["state_W1"] = np.zeros((3, 3))
    elif change == "state_dropout_step float":
        arrays["state_dropout_step"] = np.array(1.0)
    elif change == "state_W1 float32":
        arrays["state_W1"] = arrays["state_W1"].astype(np.float32)
    elif change == "optim_m/W1 3x3":
        arrays["optim_m/W1"] = arrays["optim_v/W1"] = np.zeros((3, 3))
    else:
        arrays["optim_m/W9"] = arrays["optim_v/W9"] = np.zeros(2)
    arrays["meta"] = np.array(json.dumps(meta))
    path = write_npz(tmp_path / "bad.ckpt", **arrays)
    with pytest.raises(ValueError) as info:
        load_checkpoint(path)
    assert "bad.ckpt" in str(info.value) and words in str(info.value), str(info.value)


# -- the model registry: a new network class is checkpointable by one entry --------------------

class Tiny:
    """The least a network needs: params, get_state and set_state (checked)."""

    def __init__(self, width, dtype=np.float64):
        self.width, self.dtype = width, np.dtype(dtype)
        self.params = {"W": np.arange(width, dtype=dtype)}
        self.steps = 0

    def get_state(self):
        return {"W": self.params["W"].copy(), "steps": np.array(self.steps, np.int64)}

    def set_state(self, state):
        if state["W"].shape != (self.width,) or state["W"].dtype != self.dtype:
            raise ValueError(f"state['W'] is {state['W'].dtype} {state['W'].shape}")
        self.params["W"][...] = state["W"]
        self.steps = int(state["steps"])


@pytest.fixture
def tiny_kind():
    from fastbp.checkpoint import MODELS, ModelKind, register_model

    kind = register_model(ModelKind(
        "Tiny", config=lambda net: {"width": net.width, "dtype": net.dtype.name},
        build=lambda meta: Tiny(meta["width"], meta["dtype"]),
        check=lambda meta: None if isinstance(meta.get("width"), int) else "meta width must be an int"))
    yield kind
    del MODELS["Tiny"]


def test_registered_network_roundtrip(tiny_kind, tmp_path):
    from fastbp.checkpoint import model_kind

    net = Tiny(3)
    net.params["W"] += 0.5
    net.steps = 7
    assert model_kind(net) is tiny_kind and model_kind(TwoLayerNet(3, 2, 2)) is None
    path = save_checkpoint(tmp_path / "t.npz", net, history(2), optimizer=optimizers.Momentum(), seed=1)
    c = load_checkpoint(path)
    assert c.network == "Tiny" and c.meta["version"] == 2 and c.settings["network"] == "Tiny"
    again = c.make_net()
    np.testing.assert_array_equal(again.params["W"], net.params["W"])
    assert again.steps == 7 and type(c.make_optimizer()) is optimizers.Momentum
    arrays, meta = v2_arrays((path.read_bytes(),), tmp_path)
    for change, words in [({"width": "3"}, "meta width must be an int"),
                          ({"width": 4}, "configuration or state does not fit"),
                          ({"dtype": "float32"}, "configuration or state does not fit")]:
        arrays["meta"] = np.array(json.dumps({**meta, **change}))
        with pytest.raises(ValueError, match=words):
            load_checkpoint(write_npz(tmp_path / "bad.npz", **arrays))


def test_register_model_refuses_other_objects():
    from fastbp.checkpoint import register_model

    with pytest.raises(TypeError, match="must be a ModelKind"):
        register_model({"name": "X"})
