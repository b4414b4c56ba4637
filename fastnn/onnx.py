"""ONNX export: ``Sequential`` models to ONNX files, and skl2onnx converters for the drop-ins.

``export(model, path)`` writes a :class:`~fastnn.Sequential` as an ONNX graph with one input
``X`` (n, n_in) and one output ``Y`` (n, n_out), any batch size, in the model's dtype, that
computes what ``model.predict`` computes::

    Linear        Gemm (MatMul without bias)      ReLU / LeakyReLU / Sigmoid / Tanh  the op
    Softmax       Softmax(axis=-1)                GELU (both forms)   Erf / Tanh and arithmetic
    LayerNorm     LayerNormalization (opset 17+)  BatchNorm1d   BatchNormalization, running stats
    Dropout, Identity  left out (identities at inference); a nested Sequential is inlined

Importing this module also registers converters with skl2onnx (when it is installed; at once
if skl2onnx is imported already, else the moment it is), so
``skl2onnx.to_onnx(estimator, X[:1])`` works for ``fastnn.sklearn.MLPClassifier`` and
``MLPRegressor``, including multi-output regression (output (n, n_outputs)) and
``loss="poisson"`` (exp output).

A float64 model gives a DOUBLE graph; onnxruntime has no double kernel for Erf, so the exact
GELU of a float64 model does not run there (the tanh form does).

onnx, onnxruntime and skl2onnx are the optional extra ``pip install "fastnn[onnx]"``; without
onnx this module still imports (``AVAILABLE`` is False) and ``export`` raises ImportError
saying what to install.
"""

import importlib.abc
import importlib.util
import math
import sys
import warnings
from typing import Any

import numpy as np

from .layers import (
    GELU,
    BatchNorm1d,
    Dropout,
    Identity,
    LayerNorm,
    LeakyReLU,
    Linear,
    ReLU,
    Sigmoid,
    Softmax,
    Tanh,
)
from .model import Sequential
from .sklearn import MLPClassifier, MLPRegressor

# The optional extra is imported when first used (onnx takes ~0.8 s to import, skl2onnx ~1 s
# more, and ``python -m fastnn`` imports this module for its latency benchmark).
onnx: Any = None
TensorProto: Any = None
helper: Any = None
numpy_helper: Any = None


def _load_onnx():
    """Import onnx into this module's globals (ImportError naming the extra without it)."""
    global onnx, TensorProto, helper, numpy_helper
    if onnx is None:
        try:
            import onnx as onnx_module
            from onnx import TensorProto as tensor_proto
            from onnx import helper as helper_module
            from onnx import numpy_helper as numpy_helper_module
        except ImportError as exc:
            raise ImportError(f"fastnn.onnx needs the onnx package: {INSTALL_HINT}") from exc
        onnx, TensorProto, helper = onnx_module, tensor_proto, helper_module
        numpy_helper = numpy_helper_module
    return onnx


INSTALL_HINT = "pip install 'fastnn[onnx]' (onnx, onnxruntime, skl2onnx)"

#: opset written when ``opset`` is None (LayerNormalization needs 17)
DEFAULT_OPSET = 17
#: oldest opset export writes (Softmax's axis=-1 semantics date from 13)
MIN_OPSET = 13

_SIMPLE = {ReLU: "Relu", Sigmoid: "Sigmoid", Tanh: "Tanh"}


class _Graph:
    """Nodes and initializers being collected, with unique names."""

    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)
        self.nodes = []
        self.inits = []
        self._count = 0

    def name(self, stem):
        self._count += 1
        return f"{stem}_{self._count}"

    def const(self, stem, value):
        name = self.name(stem)
        self.inits.append(numpy_helper.from_array(np.asarray(value, self.dtype), name))
        return name

    def node(self, op, inputs, **attrs):
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=self.name(op), **attrs))
        return out


def _flatten(layers):
    for layer in layers:
        if isinstance(layer, Sequential):
            yield from _flatten(layer.layers)
        else:
            yield layer


def _gelu(g, x, approximate):
    half, one = g.const("half", 0.5), g.const("one", 1.0)
    if approximate == "tanh":
        # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
        x3 = g.node("Mul", [g.node("Mul", [x, x]), x])
        inner = g.node("Add", [x, g.node("Mul", [x3, g.const("c", 0.044715)])])
        t = g.node("Tanh", [g.node("Mul", [inner, g.const("k", math.sqrt(2.0 / math.pi))])])
    else:
        # 0.5 x (1 + erf(x / sqrt(2)))
        t = g.node("Erf", [g.node("Mul", [x, g.const("rsqrt2", 1.0 / math.sqrt(2.0))])])
    return g.node("Mul", [g.node("Mul", [x, half]), g.node("Add", [t, one])])


def _affine(g, layer, n):
    if layer.weight is None:
        return g.const("scale", np.ones(n)), g.const("shift", np.zeros(n))
    return g.const("scale", layer.weight.data), g.const("shift", layer.bias.data)


def _layer(g, layer, x, index, opset):
    """Append ``layer`` to the graph after tensor ``x``; return the output tensor's name."""
    kind = type(layer)
    if kind in (Dropout, Identity):
        return x
    if kind is Linear:
        W = g.const("W", layer.weight.data)
        if layer.bias is None:
            return g.node("MatMul", [x, W])
        return g.node("Gemm", [x, W, g.const("b", layer.bias.data)])
    if kind in _SIMPLE:
        return g.node(_SIMPLE[kind], [x])
    if kind is LeakyReLU:
        return g.node("LeakyRelu", [x], alpha=float(layer.alpha))
    if kind is Softmax:
        return g.node("Softmax", [x], axis=-1)
    if kind is GELU:
        return _gelu(g, x, layer.approximate)
    if kind is BatchNorm1d:
        scale, shift = _affine(g, layer, layer.num_features)
        mean = g.const("running_mean", layer.running_mean)
        var = g.const("running_var", layer.running_var)
        return g.node("BatchNormalization", [x, scale, shift, mean, var], epsilon=float(layer.eps))
    if kind is LayerNorm:
        if opset < 17:
            raise ValueError(
                f"layer {index} (LayerNorm) needs opset >= 17 (ONNX LayerNormalization), "
                f"got opset={opset}"
            )
        scale, shift = _affine(g, layer, layer.normalized_shape)
        return g.node("LayerNormalization", [x, scale, shift], axis=-1, epsilon=float(layer.eps))
    raise ValueError(
        f"layer {index} ({kind.__name__}) cannot be exported to ONNX; exportable layers: "
        "Linear, ReLU, LeakyReLU, Sigmoid, Tanh, Softmax, GELU, LayerNorm, BatchNorm1d, "
        "Dropout and Identity (left out)"
    )


def to_model(model, opset=None):
    """The ONNX ``ModelProto`` that :func:`export` writes (checked by ``onnx.checker``)."""
    _load_onnx()
    if not isinstance(model, Sequential):
        raise TypeError(f"model must be a fastnn.Sequential, got {type(model).__name__}")
    opset = DEFAULT_OPSET if opset is None else opset
    if isinstance(opset, bool) or not isinstance(opset, int | np.integer):
        raise TypeError(f"opset must be an int or None, got {opset!r}")
    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise ValueError(f"opset must be in [{MIN_OPSET}, {newest}], got {opset}")
    if model.n_in is None:
        raise ValueError("model has no Linear layer: its input width is unknown")
    dtype = np.dtype(model.dtype)
    elem = TensorProto.FLOAT if dtype == np.float32 else TensorProto.DOUBLE
    g = _Graph(dtype)
    x = "X"
    # the graph is built in memory; a layer that cannot be exported raises before any file
    for i, layer in enumerate(_flatten(model.layers)):
        x = _layer(g, layer, x, i, int(opset))
    if x == "X":
        x = g.node("Identity", [x])
    g.nodes.append(helper.make_node("Identity", [x], ["Y"], name="output"))
    graph = helper.make_graph(
        g.nodes,
        "fastnn_sequential",
        [helper.make_tensor_value_info("X", elem, ["N", int(model.n_in)])],
        [helper.make_tensor_value_info("Y", elem, ["N", int(model.n_out)])],
        initializer=g.inits,
    )
    proto = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", int(opset))],
        producer_name="fastnn",
    )
    # the oldest IR version that carries this opset: onnx writes its newest by default, which
    # an older onnxruntime refuses
    proto.ir_version = helper.find_min_ir_version_for(list(proto.opset_import))
    onnx.checker.check_model(proto, full_check=True)
    return proto


def export(model, path, opset=None):
    """Write ``model`` (a :class:`~fastnn.Sequential`) to ``path`` as an ONNX model.

    Parameters
    ----------
    model : Sequential
        Linear, ReLU, LeakyReLU, Sigmoid, Tanh, Softmax, GELU (both forms), LayerNorm,
        BatchNorm1d (its running statistics: inference mode) and nested Sequentials; Dropout
        and Identity are left out.  Any other layer raises ValueError naming it and its index.
    path : str or os.PathLike
    opset : int or None
        ONNX opset (default 17; 13 to the newest onnx knows; LayerNorm needs 17).

    Returns
    -------
    onnx.ModelProto
        The model written, input ``X`` (N, n_in), output ``Y`` (N, n_out) in the model's dtype.
    """
    proto = to_model(model, opset)
    onnx.save(proto, str(path))
    return proto


# -- skl2onnx converters for the drop-ins --------------------------------------------------
def _register_skl2onnx():
    if not AVAILABLE:
        return False
    try:
        from skl2onnx import update_registered_converter
        from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType
        from skl2onnx.operator_converters.multilayer_perceptron import (
            _predict,
            convert_sklearn_mlp_classifier,
        )
        from skl2onnx.proto import onnx_proto
        from skl2onnx.shape_calculators.linear_classifier import (
            calculate_linear_classifier_output_shapes,
        )
    except ImportError:
        return False

    def regressor_shape(operator):
        inp = operator.inputs[0].type
        cls = DoubleTensorType if isinstance(inp, DoubleTensorType) else FloatTensorType
        n = operator.inputs[0].get_first_dimension()
        operator.outputs[0].type = cls([n, int(operator.raw_operator.n_outputs_)])

    def convert_regressor(scope, operator, container):
        """skl2onnx's MLP regressor, with the exp output of loss='poisson' and an
        (n, n_outputs) output (skl2onnx's own reshapes every regressor to (n, 1))."""
        est = operator.raw_operator
        inp = operator.inputs[0].type
        proto = (
            onnx_proto.TensorProto.DOUBLE
            if isinstance(inp, DoubleTensorType)
            else onnx_proto.TensorProto.FLOAT
        )
        poisson = est.out_activation_ == "exp"
        if poisson:
            est = _IdentityOutput(est)
        y = _predict(scope, operator.inputs[0].full_name, container, est, proto_dtype=proto)
        if poisson:
            exp = scope.get_unique_variable_name("exp_output")
            container.add_node("Exp", [y], [exp], name=scope.get_unique_operator_name("Exp"))
            y = exp
        shape = scope.get_unique_variable_name("shape")
        container.add_initializer(
            shape, onnx_proto.TensorProto.INT64, [2], [-1, int(est.n_outputs_)]
        )
        container.add_node(
            "Reshape",
            [y, shape],
            operator.outputs[0].full_name,
            name=scope.get_unique_operator_name("Reshape"),
        )

    update_registered_converter(
        MLPClassifier,
        "FastnnMLPClassifier",
        calculate_linear_classifier_output_shapes,
        convert_sklearn_mlp_classifier,
        options={
            "zipmap": [True, False, "columns"],
            "output_class_labels": [False, True],
            "nocl": [True, False],
        },
    )
    update_registered_converter(
        MLPRegressor, "FastnnMLPRegressor", regressor_shape, convert_regressor
    )
    return True


class _IdentityOutput:
    """An estimator seen with an identity output activation (the exp is added after)."""

    def __init__(self, est):
        self._est = est
        self.out_activation_ = "identity"

    def __getattr__(self, name):
        return getattr(self._est, name)


class _RegisterOnImport(importlib.abc.MetaPathFinder):
    """Registers the converters right after skl2onnx's own import (once)."""

    def find_spec(self, name, path=None, target=None):
        if name != "skl2onnx":
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)  # the finders that really find it
        loader = getattr(spec, "loader", None)
        exec_module = getattr(loader, "exec_module", None)
        if exec_module is None:
            return spec

        def exec_and_register(module):
            exec_module(module)
            try:
                _register_skl2onnx()
            except Exception as exc:  # never break the user's import of skl2onnx
                warnings.warn(
                    f"fastnn.onnx could not register its skl2onnx converters: {exc}",
                    RuntimeWarning,
                    stacklevel=2,
                )

        loader.exec_module = exec_and_register
        return spec


#: whether the onnx package is installed (export works)
AVAILABLE = importlib.util.find_spec("onnx") is not None
#: whether skl2onnx is installed, so that the drop-ins' converters are registered (at once when
#: skl2onnx is imported already, else when it is)
SKL2ONNX_REGISTERED = AVAILABLE and importlib.util.find_spec("skl2onnx") is not None
if SKL2ONNX_REGISTERED:
    if "skl2onnx" in sys.modules:
        SKL2ONNX_REGISTERED = _register_skl2onnx()
    else:
        sys.meta_path.insert(0, _RegisterOnImport())

__all__ = ["export", "to_model", "DEFAULT_OPSET", "MIN_OPSET", "AVAILABLE", "SKL2ONNX_REGISTERED"]
