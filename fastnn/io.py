"""Saving and loading models and optimizers as one ``.npz`` file.

The file holds only plain arrays, so ``np.load(path, allow_pickle=False)`` reads it:

- ``__fastnn__``: a 0-d unicode array with JSON: the format name and version, the model's
  architecture (each layer's class name and ``get_config()``, nested for Sequential) and, when
  an optimizer was saved, its class name, ``get_config()``, ``step_count`` and the state of
  its learning-rate schedule (``LRScheduler.state_dict()``), if it has one;
- ``model/<path>/param<j>``: the j-th parameter of the layer at ``<path>`` (layer indices
  joined by ``.``, e.g. ``0`` or ``2.1`` inside a nested Sequential);
- ``model/<path>/state/<name>``: a layer's non-parameter state (``state_arrays()``);
- ``optimizer/<g>/<name>``: the optimizer's state buffer ``<name>`` of parameter group ``g``.

Files are written to one temporary file per target (``.<name>.fastnn-tmp`` in the target's
folder, locked while written) and moved into place with ``os.replace``, so a crash never leaves
a half-written checkpoint under the real name, and the next save to that target reuses the
temporary file a killed process left.

Reading treats every file as untrusted (see :func:`load`): sizes are checked before anything
is allocated, only the entries the format needs are read, and a malformed file raises a
ValueError naming the file and what is wrong.
"""

import hashlib
import json
import math
import os
import re

try:  # POSIX: a save holds a lock on its temporary file while it writes it
    import fcntl
except ImportError:  # pragma: no cover (Windows)
    fcntl = None

import numpy as np

from . import _untrusted, layers, optim
from ._untrusted import Archive
from ._validation import FLOAT_DTYPES
from .layers import Layer
from .model import Sequential
from .optim import Optimizer

FORMAT = "fastnn"
FORMAT_VERSION = 1
META_KEY = "__fastnn__"

_extra_layers = {}


def register_layer(cls):
    """Make a user-defined Layer subclass loadable by :func:`load` (usable as a decorator).

    Subclasses of :class:`~fastnn.Layer` that are imported when ``load`` runs are found
    without registering; registering makes the lookup explicit and wins on name clashes.
    """
    if not (isinstance(cls, type) and issubclass(cls, Layer)):
        raise TypeError(f"cls must be a subclass of fastnn.Layer, got {cls!r}")
    _extra_layers[cls.__name__] = cls
    return cls


def _subclasses(base):
    found, todo = {}, [base]
    while todo:
        for sub in todo.pop().__subclasses__():
            found.setdefault(sub.__name__, sub)
            todo.append(sub)
    return found


def _layer_classes():
    table = _subclasses(Layer)
    for name in dir(layers):  # fastnn's own layers win over same-named user classes
        obj = getattr(layers, name)
        if isinstance(obj, type) and issubclass(obj, Layer):
            table[obj.__name__] = obj
    table["Sequential"] = Sequential
    table.update(_extra_layers)
    return table


def _optimizer_classes():
    table = _subclasses(Optimizer)
    for name in dir(optim):
        obj = getattr(optim, name)
        if isinstance(obj, type) and issubclass(obj, Optimizer):
            table[obj.__name__] = obj
    return table


# -- writing -----------------------------------------------------------------------------------
def _describe(layer, path, arrays):
    """JSON-able spec of ``layer`` (recursing into Sequential); its arrays go into ``arrays``."""
    spec = {"type": type(layer).__name__}
    if isinstance(layer, Sequential):
        spec["layers"] = [
            _describe(child, f"{path}.{i}" if path else str(i), arrays)
            for i, child in enumerate(layer.layers)
        ]
        return spec
    spec["config"] = layer.get_config()
    spec["n_params"] = len(layer.parameters())
    for j, p in enumerate(layer.parameters()):
        arrays[f"model/{path}/param{j}"] = p.data
    state = _state_arrays(layer)
    spec["state"] = sorted(state)
    for name, value in state.items():
        arrays[f"model/{path}/state/{name}"] = np.asarray(value)
    return spec


def _state_arrays(layer):
    getter = getattr(layer, "state_arrays", None)
    return dict(getter()) if getter is not None else {}


def save(path, model, optimizer=None):
    """Write ``model`` (and optionally ``optimizer``) to one ``.npz`` file at ``path``.

    Parameters
    ----------
    path : str or os.PathLike
        Target file (the name is used as given; ``.npz`` is the usual suffix).  The file is
        written next to it under a temporary name and then renamed, so an existing file at
        ``path`` is replaced only by a complete one.
    model : Layer
        Usually a :class:`~fastnn.Sequential`; any fastnn layer works.
    optimizer : Optimizer, optional
        Saved with its hyper-parameters, ``step_count`` and state buffers (momentum, Adam
        moments), for :func:`load_optimizer`.
    """
    if not isinstance(model, Layer):
        raise TypeError(f"model must be a fastnn Layer or Sequential, got {type(model).__name__}")
    if optimizer is not None and not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer must be a fastnn Optimizer, got {type(optimizer).__name__}")
    path = os.fspath(path)
    arrays = {}
    meta = {"format": FORMAT, "version": FORMAT_VERSION, "model": _describe(model, "", arrays)}
    if optimizer is not None:
        meta["optimizer"] = {
            "type": type(optimizer).__name__,
            "config": optimizer.get_config(),
            "step_count": int(optimizer.step_count),
            "n_groups": len(optimizer.state),
            "state": [sorted(s) for s in optimizer.state],
            "schedule": None if optimizer.schedule is None else optimizer.schedule.state_dict(),
        }
        for g, state in enumerate(optimizer.state):
            for name, value in state.items():
                arrays[f"optimizer/{g}/{name}"] = value
    try:
        text = json.dumps(meta)
    except TypeError as exc:
        raise TypeError(f"cannot save: a get_config() value is not JSON ({exc})") from None
    arrays[META_KEY] = np.array(text)  # 0-d unicode array: loads without pickle

    _write_atomically(path, lambda f: np.savez(f, **arrays))
    return path


def temporary_name(path):
    """The one temporary file a save to ``path`` writes: ``.<name>.fastnn-tmp`` next to it (a
    hash of the name when that would be too long for the file system)."""
    folder, name = os.path.split(os.path.abspath(path))
    if len(name) > 200:
        name = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()
    return os.path.join(folder, f".{name}.fastnn-tmp")


def _write_atomically(path, write):
    """Write through ``write(file)`` into the target's temporary file, then ``os.replace`` it
    onto ``path``: the target is always the old or the new complete file.

    The temporary name is derived from the target, so there is at most one per target, and a
    save reuses (truncates) the one a killed process left.  A save holds an exclusive
    ``flock`` on it from opening to renaming, so two saves to one target (threads or
    processes) take turns instead of writing into each other's file; after waiting, a save
    checks that the name still refers to the file it locked (the previous holder may have
    renamed it onto the target) and starts over otherwise.
    """
    tmp = temporary_name(path)
    while True:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o666)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                current = os.stat(tmp)
            except FileNotFoundError:
                current = None
            mine = os.fstat(fd)
            if current is None or (current.st_dev, current.st_ino) != (mine.st_dev, mine.st_ino):
                os.close(fd)
                continue  # renamed or removed while we waited: open the name afresh
        except BaseException:
            os.close(fd)
            raise
        break
    try:
        os.ftruncate(fd, 0)  # what a killed save left
        with os.fdopen(os.dup(fd), "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    finally:
        os.close(fd)  # releases the lock


# -- reading -----------------------------------------------------------------------------------
# Files are untrusted: everything below checks what the file declares before acting on it (see
# fastnn._untrusted for the archive and JSON side).

#: largest metadata entry read (a 0-d unicode array, 4 bytes per character)
MAX_META_BYTES = 16 << 20
#: most layers a file may describe
MAX_LAYERS = 100_000
#: most parameter arrays per layer
MAX_PARAMS_PER_LAYER = 64
#: largest step_count / last_epoch accepted (exact in float64)
MAX_COUNT = 2**53
KNOWN_VERSIONS = (1,)
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,200}")


def _open(path):
    """(archive, meta) of a fastnn file, the archive open; ValueError naming the file."""
    archive = Archive(path)
    try:
        return archive, _read_meta(archive)
    except BaseException:
        archive.close()
        raise


def _read_meta(archive):
    where = archive.where
    if not archive.has(META_KEY):
        raise ValueError(
            f"{where} is an .npz file but not a fastnn checkpoint: it has no {META_KEY!r} entry"
        )
    head = archive.header(META_KEY)
    if head.dtype.kind != "U" or head.shape != ():
        raise ValueError(
            f"{where}: the {META_KEY!r} entry must be a 0-d unicode array (JSON text), got "
            f"{head.dtype} {head.shape}"
        )
    text = str(archive.read_small(META_KEY, MAX_META_BYTES)[()])
    meta = _untrusted.loads(text, f"{where}: the {META_KEY!r} entry")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{where}: the {META_KEY!r} entry does not describe a fastnn file")
    version = meta.get("version")
    if type(version) is not int:
        raise ValueError(f"{where}: invalid format version {version!r} (an integer expected)")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{where} was written in fastnn file format version {version}; this fastnn reads "
            f"versions up to {FORMAT_VERSION}. Upgrade fastnn to load it."
        )
    if version not in KNOWN_VERSIONS:
        raise ValueError(f"{where}: invalid format version {version!r}")
    return meta


def _check_plain(value, where, what):
    """``value`` is made of JSON scalars, lists and dicts with finite numbers only."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where}: {what} holds a non-finite number {value}")
    if isinstance(value, list):
        for item in value:
            _check_plain(item, where, what)
    elif isinstance(value, dict):
        for item in value.values():
            _check_plain(item, where, what)


def _check_spec(spec, path, where, leaves):
    """Validate a model description without building anything; collect (path, spec) of the
    non-Sequential layers in ``leaves``."""
    label = f"layer {path or '(top)'}"
    if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
        raise ValueError(f"{where}: {label}: malformed layer description (no type)")
    if spec["type"] == "Sequential":
        children = spec.get("layers")
        if not isinstance(children, list):
            raise ValueError(f"{where}: {label}: a Sequential needs a list of layers")
        if not children:
            raise ValueError(f"{where}: {label}: a Sequential with no layers")
        for i, child in enumerate(children):
            _check_spec(child, f"{path}.{i}" if path else str(i), where, leaves)
        return
    if len(leaves) >= MAX_LAYERS:
        raise ValueError(f"{where}: more than {MAX_LAYERS} layers")
    config = spec.get("config", {})
    if not isinstance(config, dict):
        raise ValueError(f"{where}: {label}: config must be a JSON object")
    _check_plain(config, where, f"{label}'s config")
    n_params = spec.get("n_params", 0)
    if type(n_params) is not int or not 0 <= n_params <= MAX_PARAMS_PER_LAYER:
        raise ValueError(f"{where}: {label}: invalid n_params {n_params!r}")
    names = spec.get("state", [])
    if (
        not isinstance(names, list)
        or not all(isinstance(n, str) and _NAME.fullmatch(n) for n in names)
        or len(set(names)) != len(names)
    ):
        raise ValueError(f"{where}: {label}: invalid list of state arrays {names!r}")
    leaves.append((path, spec))


def _positive_int(config, key, default=None):
    value = config.get(key, default)
    return value if type(value) is int and value > 0 else None


def _declared_shapes(spec):
    """Parameter shapes implied by the config of fastnn's own parameter layers (None when the
    config is not usable as is: the constructor then says what is wrong)."""
    name, config = spec["type"], spec.get("config", {})
    if name == "Linear":
        n_in, n_out = _positive_int(config, "n_in"), _positive_int(config, "n_out")
        if n_in is None or n_out is None:
            return None
        return [(n_in, n_out)] + ([(n_out,)] if config.get("bias", True) else [])
    if name in ("BatchNorm1d", "LayerNorm"):
        key, affine = (
            ("num_features", "affine")
            if name == "BatchNorm1d"
            else ("normalized_shape", "elementwise_affine")
        )
        shape = config.get(key)
        if isinstance(shape, list) and len(shape) == 1:
            shape = shape[0]
        n = shape if type(shape) is int and shape > 0 else None
        if n is None:
            return None
        return [(n,), (n,)] if config.get(affine, True) else []
    return None


def _model_headers(archive, leaves):
    """The .npy headers of every array the model description names, checked against the
    parameter shapes its configs imply, before anything is built."""
    where, heads, total = archive.where, {}, 0
    for path, spec in leaves:
        shapes = _declared_shapes(spec)
        if shapes is not None and len(shapes) != spec.get("n_params", 0):
            raise ValueError(
                f"{where}: layer {path} ({spec['type']}) has {len(shapes)} parameters by its "
                f"config, the file declares {spec.get('n_params')}"
            )
        for j in range(spec.get("n_params", 0)):
            key = f"model/{path}/param{j}"
            head = archive.header(key)
            if head.dtype not in FLOAT_DTYPES:
                raise ValueError(
                    f"{where}: array {key!r} has dtype {head.dtype}; parameters are float32 or "
                    "float64"
                )
            if shapes is not None and head.shape != shapes[j]:
                raise ValueError(
                    f"{where}: array {key!r} has shape {head.shape}, expected {shapes[j]} for "
                    f"layer {path} ({spec['type']} with config {spec.get('config')})"
                )
            heads[key] = head
            total += head.nbytes
        for name in spec.get("state", []):
            key = f"model/{path}/state/{name}"
            heads[key] = head = archive.header(key)
            if head.dtype.kind not in "biuf":
                raise ValueError(f"{where}: array {key!r} has dtype {head.dtype}")
            total += head.nbytes
    return heads


def _check_finite(arr, key, where):
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError(f"{where}: array {key!r} holds NaN or inf")


def _load_layer(layer, spec, path, archive, heads):
    """Stream the saved parameters and state of the layer tree into the rebuilt ``layer``."""
    where = archive.where
    if isinstance(layer, Sequential):
        for i, (child, child_spec) in enumerate(zip(layer.layers, spec["layers"], strict=True)):
            _load_layer(child, child_spec, f"{path}.{i}" if path else str(i), archive, heads)
        return
    params = layer.parameters()
    if len(params) != spec.get("n_params", 0):
        raise ValueError(
            f"{where}: layer {path} ({spec['type']}) has {len(params)} parameters, "
            f"the file has {spec.get('n_params')}"
        )
    for j, p in enumerate(params):
        key = f"model/{path}/param{j}"
        archive.read_into(heads[key], p.data)
        _check_finite(p.data, key, where)
    names = spec.get("state", [])
    if not names:
        return
    template = _state_arrays(layer)
    loader = getattr(layer, "load_state_arrays", None)
    if loader is None:
        raise ValueError(f"{where}: {spec['type']} cannot take back its saved state")
    state = {}
    for name in names:
        key = f"model/{path}/state/{name}"
        like = template.get(name)
        if like is None:
            raise ValueError(f"{where}: layer {path} ({spec['type']}) has no state {name!r}")
        like = np.asarray(like)
        arr = archive.read_into(heads[key], np.empty(like.shape, like.dtype))
        _check_finite(arr, key, where)
        state[name] = arr
    try:
        loader(state)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: layer {path} ({spec['type']}): {exc}") from None


def _build(spec, path, where):
    """A layer tree from a checked description (see _check_spec)."""
    name = spec["type"]
    # private helpers (_Norm, _Elementwise) and the base class are not layers a file can name
    cls = None if name.startswith("_") or name == "Layer" else _layer_classes().get(name)
    if cls is None:
        raise ValueError(
            f"{where}: unknown layer type {name!r}; import the module that defines it or "
            "register it with fastnn.io.register_layer"
        )
    if name == "Sequential":
        children = [
            _build(child, f"{path}.{i}" if path else str(i), where)
            for i, child in enumerate(spec["layers"])
        ]
        try:
            return cls(*children)
        except (TypeError, ValueError) as exc:  # e.g. layers of different dtypes
            raise ValueError(f"{where}: layer {path or '(top)'} (Sequential): {exc}") from None
    try:
        return cls(**spec.get("config", {}))
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"{where}: cannot rebuild {name} from its config: {exc}") from None


def load(path):
    """Rebuild the model saved by :func:`save` at ``path``.

    The file is treated as untrusted: its description is checked against the stored arrays'
    headers before anything is allocated, only the arrays the model needs are read (each
    bounded by the size the description implies), and parameters must be finite float32 or
    float64 exactly as saved.

    Returns
    -------
    model : Layer
        A new :class:`~fastnn.Sequential` (or whichever layer was saved) with the saved
        parameters and layer state.

    Raises
    ------
    ValueError
        The file is not a fastnn file (random bytes, truncated, another .npz), was written by a
        newer format version, or does not match the architecture it describes.
    """
    archive, meta = _open(path)
    with archive:
        where = archive.where
        spec = meta.get("model")
        if not isinstance(spec, dict):
            raise ValueError(f"{where}: the file holds no model description")
        leaves = []
        _check_spec(spec, "", where, leaves)
        heads = _model_headers(archive, leaves)
        model = _build(spec, "", where)
        _load_layer(model, spec, "", archive, heads)
    return model


def _check_schedule(schedule, where):
    if schedule is None:
        return None
    what = "the saved learning-rate schedule state"
    if not isinstance(schedule, dict) or not isinstance(schedule.get("type"), str):
        raise ValueError(f"{where}: {what} is malformed")
    for key, value in schedule.items():
        if key == "type":
            continue
        if type(value) not in (int, float):
            raise ValueError(f"{where}: {what}: {key} must be a number, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value) and key != "best":
            raise ValueError(f"{where}: {what}: {key} must be finite, got {value}")
    need = {"base_lr": float, "last_epoch": int}
    if schedule["type"] == "ReduceLROnPlateau":
        need.update(best=float, num_bad_epochs=int, cooldown_counter=int)
    for key, kind in need.items():
        value = schedule.get(key)
        if value is None:
            raise ValueError(f"{where}: {what} has no {key!r}")
        if kind is int and (type(value) is not int or not 0 <= value <= MAX_COUNT):
            raise ValueError(f"{where}: {what}: {key} must be an integer in [0, 2**53]")
    if schedule["base_lr"] < 0:
        raise ValueError(f"{where}: {what}: base_lr must be >= 0")
    return schedule


def load_optimizer(path, model):
    """Rebuild the optimizer saved with ``fastnn.save(path, model, optimizer)`` for ``model``.

    The new optimizer covers ``model.parameters()`` and gets the saved hyper-parameters
    (including the current ``lr``), ``step_count`` and state buffers, so training continues as
    if it had never stopped (see ``fit(initial_epoch=...)`` for resuming the shuffling too).
    The file is checked as :func:`load` checks it.

    Parameters
    ----------
    path : str or os.PathLike
    model : Layer
        The model the optimizer updates, typically ``fastnn.load(path)``.
    """
    if not isinstance(model, Layer):
        raise TypeError(f"model must be a fastnn Layer or Sequential, got {type(model).__name__}")
    archive, meta = _open(path)
    with archive:
        where = archive.where
        spec = meta.get("optimizer")
        if not isinstance(spec, dict):
            raise ValueError(
                f"{where} holds no optimizer: save it with fastnn.save(path, model, opt)"
            )
        name = spec.get("type")
        cls = _optimizer_classes().get(name) if isinstance(name, str) else None
        if cls is None:
            raise ValueError(f"{where}: unknown optimizer type {name!r}")
        config = spec.get("config", {})
        if not isinstance(config, dict):
            raise ValueError(f"{where}: the optimizer's config must be a JSON object")
        _check_plain(config, where, "the optimizer's config")
        step_count = spec.get("step_count", 0)
        if type(step_count) is not int or not 0 <= step_count <= MAX_COUNT:
            raise ValueError(
                f"{where}: step_count must be an integer in [0, 2**53], got {step_count!r}"
            )
        names = spec.get("state", [])
        if not isinstance(names, list) or not all(
            isinstance(g, list) and all(isinstance(n, str) for n in g) for g in names
        ):
            raise ValueError(f"{where}: the optimizer's state list is malformed: {names!r}")
        schedule = _check_schedule(spec.get("schedule"), where)
        if not model.parameters():
            raise ValueError(f"{where}: model has no parameters for the optimizer to update")
        try:
            opt = cls(model.parameters(), **config)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ValueError(f"{where}: cannot rebuild {name} for this model: {exc}") from None
        if len(opt.state) != spec.get("n_groups") or len(names) != len(opt.state):
            raise ValueError(
                f"{where}: the saved optimizer has {spec.get('n_groups')!r} parameter groups, "
                f"one built for this model has {len(opt.state)}; pass the model it was saved with"
            )
        heads = []
        for g, group in enumerate(names):
            for key in group:
                if key not in opt.state[g]:
                    raise ValueError(f"{where}: {name} has no state buffer {key!r}")
                heads.append((g, key, archive.header(f"optimizer/{g}/{key}")))
        for g, key, head in heads:  # every header checked before any data is read
            archive.read_into(head, opt.state[g][key])
            _check_finite(opt.state[g][key], f"optimizer/{g}/{key}", where)
    opt.step_count = step_count
    opt._saved_schedule = schedule  # continued by the next schedule of its type made for opt
    return opt


# -- in-memory copies (EarlyStopping's best parameters) ----------------------------------------
def capture(model):
    """Copies of every parameter and layer state of ``model``, for :func:`restore`."""
    arrays = {}
    _describe(model, "", arrays)
    return {k: np.array(v, copy=True) for k, v in arrays.items()}


def restore(model, saved):
    """Put back what :func:`capture` took from the same model."""
    arrays = {}
    spec = _describe(model, "", arrays)
    _fill(model, spec, "", saved)


def _fill(layer, spec, path, arrays):
    """Copy captured parameters and state back into the same layer tree."""
    if isinstance(layer, Sequential):
        for i, (child, child_spec) in enumerate(zip(layer.layers, spec["layers"], strict=True)):
            _fill(child, child_spec, f"{path}.{i}" if path else str(i), arrays)
        return
    for j, p in enumerate(layer.parameters()):
        p.data[...] = arrays[f"model/{path}/param{j}"]
    names = spec.get("state", [])
    if names:
        layer.load_state_arrays({name: arrays[f"model/{path}/state/{name}"] for name in names})
