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

Files are written to a temporary file in the target folder and moved into place with
``os.replace``, so a crash never leaves a half-written checkpoint under the real name.
"""

import json
import os
import tempfile

import numpy as np

from . import layers, optim
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

    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".fastnn-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


# -- reading -----------------------------------------------------------------------------------
def _read(path):
    """(meta dict, arrays dict) from a fastnn file, or a ValueError naming the path."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path!r}")
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            arrays = None  # a lone .npy array
        else:
            with data:
                arrays = {key: data[key] for key in data.files}
    except Exception as exc:  # random bytes, truncated zip, CRC errors, pickled content
        raise ValueError(
            f"{path!r} is not a readable fastnn file (.npz expected): {type(exc).__name__}: {exc}"
        ) from None
    if arrays is None:
        raise ValueError(f"{path!r} holds a single .npy array, not a fastnn checkpoint (.npz)")
    if META_KEY not in arrays:
        raise ValueError(
            f"{path!r} is an .npz file but not a fastnn checkpoint: it has no {META_KEY!r} entry"
        )
    try:
        meta = json.loads(str(arrays.pop(META_KEY)[()]))
    except (ValueError, TypeError, IndexError) as exc:
        raise ValueError(f"{path!r}: the {META_KEY!r} entry is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path!r}: the {META_KEY!r} entry does not describe a fastnn file")
    version = meta.get("version")
    if not isinstance(version, int) or version < 1:
        raise ValueError(f"{path!r}: invalid format version {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{path!r} was written in fastnn file format version {version}; this fastnn reads "
            f"versions up to {FORMAT_VERSION}. Upgrade fastnn to load it."
        )
    return meta, arrays


def _build(spec, path, arrays, where):
    table = _layer_classes()
    try:
        name = spec["type"]
    except (TypeError, KeyError):
        raise ValueError(f"{where}: malformed layer description {spec!r}") from None
    cls = table.get(name)
    if cls is None:
        raise ValueError(
            f"{where}: unknown layer type {name!r}; import the module that defines it or "
            "register it with fastnn.io.register_layer"
        )
    if name == "Sequential":
        children = [
            _build(child, f"{path}.{i}" if path else str(i), arrays, where)
            for i, child in enumerate(spec.get("layers", []))
        ]
        return cls(*children)
    try:
        layer = cls(**spec.get("config", {}))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: cannot rebuild {name} from its config: {exc}") from None
    return layer


def _fill(layer, spec, path, arrays, where):
    """Copy saved parameters and state into a rebuilt layer tree (after Sequential packed it)."""
    if isinstance(layer, Sequential):
        for i, (child, child_spec) in enumerate(zip(layer.layers, spec["layers"], strict=True)):
            _fill(child, child_spec, f"{path}.{i}" if path else str(i), arrays, where)
        return
    params = layer.parameters()
    if len(params) != spec.get("n_params", len(params)):
        raise ValueError(
            f"{where}: layer {path} ({spec['type']}) has {len(params)} parameters, "
            f"the file has {spec.get('n_params')}"
        )
    for j, p in enumerate(params):
        key = f"model/{path}/param{j}"
        _copy_into(p.data, arrays, key, where)
    names = spec.get("state", [])
    if names:
        state = {}
        for name in names:
            key = f"model/{path}/state/{name}"
            if key not in arrays:
                raise ValueError(f"{where}: missing array {key!r}")
            state[name] = arrays[key]
        loader = getattr(layer, "load_state_arrays", None)
        if loader is None:
            raise ValueError(f"{where}: {spec['type']} cannot take back its saved state")
        loader(state)


def _copy_into(target, arrays, key, where):
    if key not in arrays:
        raise ValueError(f"{where}: missing array {key!r}")
    value = arrays[key]
    if value.shape != target.shape:
        raise ValueError(f"{where}: array {key!r} has shape {value.shape}, expected {target.shape}")
    target[...] = value


def load(path):
    """Rebuild the model saved by :func:`save` at ``path``.

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
    meta, arrays = _read(path)
    where = repr(os.fspath(path))
    spec = meta.get("model")
    if not isinstance(spec, dict):
        raise ValueError(f"{where}: the file holds no model description")
    try:
        model = _build(spec, "", arrays, where)
        _fill(model, spec, "", arrays, where)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{where}: malformed model description ({exc!r})") from None
    return model


def load_optimizer(path, model):
    """Rebuild the optimizer saved with ``fastnn.save(path, model, optimizer)`` for ``model``.

    The new optimizer covers ``model.parameters()`` and gets the saved hyper-parameters
    (including the current ``lr``), ``step_count`` and state buffers, so training continues as
    if it had never stopped (see ``fit(initial_epoch=...)`` for resuming the shuffling too).

    Parameters
    ----------
    path : str or os.PathLike
    model : Layer
        The model the optimizer updates, typically ``fastnn.load(path)``.
    """
    if not isinstance(model, Layer):
        raise TypeError(f"model must be a fastnn Layer or Sequential, got {type(model).__name__}")
    meta, arrays = _read(path)
    where = repr(os.fspath(path))
    spec = meta.get("optimizer")
    if not isinstance(spec, dict):
        raise ValueError(f"{where} holds no optimizer: save it with fastnn.save(path, model, opt)")
    cls = _optimizer_classes().get(spec.get("type"))
    if cls is None:
        raise ValueError(f"{where}: unknown optimizer type {spec.get('type')!r}")
    try:
        opt = cls(model.parameters(), **spec.get("config", {}))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: cannot rebuild {spec['type']} for this model: {exc}") from None
    if len(opt.state) != spec.get("n_groups"):
        raise ValueError(
            f"{where}: the saved optimizer has {spec.get('n_groups')} parameter groups, one "
            f"built for this model has {len(opt.state)}; pass the model it was saved with"
        )
    for g, names in enumerate(spec.get("state", [])):
        for name in names:
            if name not in opt.state[g]:
                raise ValueError(f"{where}: {spec['type']} has no state buffer {name!r}")
            _copy_into(opt.state[g][name], arrays, f"optimizer/{g}/{name}", where)
    opt.step_count = int(spec.get("step_count", 0))
    schedule = spec.get("schedule")
    if schedule is not None and not (isinstance(schedule, dict) and "type" in schedule):
        raise ValueError(f"{where}: the saved learning-rate schedule state is malformed")
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
    _fill(model, spec, "", saved, "restore")
