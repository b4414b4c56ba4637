"""fastnn.onnx: Sequential export and the skl2onnx converters of the drop-ins.

The reference is onnxruntime running the exported file: for each layer type the ONNX output
must equal ``model.predict`` within 1e-5 (float32), and ``onnx.checker`` must accept the file.
Skipped only when the optional extra (onnx, onnxruntime) is not installed.
"""

import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip(
    "onnx", reason="the onnx extra is not installed: pip install -e '.[onnx]'"
)
ort = pytest.importorskip(
    "onnxruntime", reason="the onnx extra is not installed: pip install -e '.[onnx]'"
)

import fastnn as fnn  # noqa: E402
import fastnn.onnx as fonnx  # noqa: E402
from fastnn.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

N_IN = 7


def _run(path_or_proto, X):
    data = path_or_proto if isinstance(path_or_proto, str) else path_or_proto.SerializeToString()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: X})


def _batchnorm(n, dtype=np.float32, affine=True):
    layer = fnn.BatchNorm1d(n, affine=affine, dtype=dtype)
    rng = np.random.default_rng(5)
    layer.running_mean[...] = rng.standard_normal(n)
    layer.running_var[...] = rng.uniform(0.3, 2.0, n)
    if affine:
        layer.weight.data[...] = rng.uniform(0.5, 1.5, n)
        layer.bias.data[...] = rng.standard_normal(n)
    return layer


def _layernorm(n, dtype=np.float32, affine=True):
    layer = fnn.LayerNorm(n, elementwise_affine=affine, dtype=dtype)
    if affine:
        rng = np.random.default_rng(6)
        layer.weight.data[...] = rng.uniform(0.5, 1.5, n)
        layer.bias.data[...] = rng.standard_normal(n)
    return layer


LAYERS = {
    "linear": lambda: [],
    "linear-no-bias": lambda: [fnn.Linear(9, 9, bias=False, seed=3)],
    "relu": lambda: [fnn.ReLU()],
    "leaky-relu": lambda: [fnn.LeakyReLU(0.2)],
    "sigmoid": lambda: [fnn.Sigmoid()],
    "tanh": lambda: [fnn.Tanh()],
    "softmax": lambda: [fnn.Softmax()],
    "gelu": lambda: [fnn.GELU()],
    "gelu-tanh": lambda: [fnn.GELU("tanh")],
    "layernorm": lambda: [_layernorm(9)],
    "layernorm-plain": lambda: [_layernorm(9, affine=False)],
    "batchnorm": lambda: [_batchnorm(9)],
    "batchnorm-plain": lambda: [_batchnorm(9, affine=False)],
    "dropout": lambda: [fnn.Dropout(0.3)],
    "identity": lambda: [fnn.Identity()],
    "nested": lambda: [fnn.Sequential(fnn.Linear(9, 9, seed=4), fnn.Tanh())],
}


def _model(name, dtype=np.float32):
    middle = LAYERS[name]()
    if dtype == np.float64:
        for layer in middle:
            if isinstance(layer, fnn.BatchNorm1d):
                middle = [_batchnorm(9, np.float64, layer.affine)]
            elif isinstance(layer, fnn.LayerNorm):
                middle = [_layernorm(9, np.float64, layer.elementwise_affine)]
            elif isinstance(layer, fnn.Linear | fnn.Sequential):
                middle = [fnn.Linear(9, 9, bias=False, seed=3, dtype=np.float64)]
    first = fnn.Linear(N_IN, 9, seed=1, dtype=dtype)
    last = fnn.Linear(9, 4, seed=2, dtype=dtype)
    return fnn.Sequential(first, *middle, last)


@pytest.fixture(scope="module")
def X():
    return np.random.default_rng(0).standard_normal((50, N_IN)).astype(np.float32) * 2


@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_round_trip_float32(name, X, tmp_path):
    model = _model(name)
    path = str(tmp_path / f"{name}.onnx")
    proto = fonnx.export(model, path)
    onnx.checker.check_model(onnx.load(path), full_check=True)
    assert [i.name for i in proto.graph.input] == ["X"]
    (Y,) = _run(path, X)
    expected = model.predict(X)
    assert Y.dtype == np.float32 and Y.shape == expected.shape
    np.testing.assert_allclose(Y, expected, rtol=1e-5, atol=1e-5)
    # one row and odd batch sizes: the batch dimension is free
    np.testing.assert_allclose(_run(path, X[:1])[0], expected[:1], rtol=1e-5, atol=1e-5)
    if name in ("dropout", "identity"):
        assert {n.op_type for n in proto.graph.node} <= {"Gemm", "Identity"}


@pytest.mark.parametrize("name", ["relu", "gelu-tanh", "layernorm", "batchnorm", "softmax"])
def test_float64_model(name, X, tmp_path):
    """float64 models export as DOUBLE graphs (onnxruntime has no double Erf kernel, so the
    exact GELU runs there in float32 only)."""
    model = _model(name, np.float64)
    proto = fonnx.to_model(model)
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.DOUBLE
    (Y,) = _run(proto, X.astype(np.float64))
    np.testing.assert_allclose(Y, model.predict(X.astype(np.float64)), rtol=1e-12, atol=1e-12)


class Doubler(fnn.Identity):
    """A layer export does not know."""


def test_unsupported_layer_is_named(tmp_path):
    model = fnn.Sequential(fnn.Linear(3, 4), fnn.ReLU(), Doubler(), fnn.Linear(4, 2))
    path = tmp_path / "bad.onnx"
    with pytest.raises(ValueError, match=r"layer 2 \(Doubler\) cannot be exported"):
        fonnx.export(model, path)
    assert not path.exists()


def test_bad_arguments():
    model = fnn.Sequential(fnn.Linear(3, 4), fnn.LayerNorm(4))
    with pytest.raises(ValueError, match="LayerNorm\\) needs opset >= 17"):
        fonnx.to_model(model, opset=13)
    with pytest.raises(ValueError, match="opset must be in"):
        fonnx.to_model(model, opset=5)
    with pytest.raises(TypeError, match="opset"):
        fonnx.to_model(model, opset="17")
    with pytest.raises(TypeError, match="model must be a fastnn.Sequential"):
        fonnx.to_model(MLPClassifier())
    relu_only = fnn.Sequential(fnn.Linear(3, 4), fnn.ReLU())
    assert fonnx.to_model(relu_only, opset=13).opset_import[0].version == 13


# -- skl2onnx converters for the drop-ins ---------------------------------------------------
@pytest.fixture(scope="module")
def to_onnx():
    skl2onnx = pytest.importorskip("skl2onnx", reason="skl2onnx (the onnx extra) not installed")
    assert fonnx.SKL2ONNX_REGISTERED
    return skl2onnx.to_onnx


@pytest.fixture(scope="module")
def iris():
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    return X.astype(np.float32), y


def _fit(est, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return est.fit(X, y)


@pytest.mark.parametrize("target", ["multiclass", "binary", "strings"])
def test_classifier_converter(target, iris, to_onnx):
    X, y = iris
    if target == "binary":
        y = y == 1
    elif target == "strings":
        y = np.array(["setosa", "versicolor", "virginica"])[y]
    clf = _fit(MLPClassifier(hidden_layer_sizes=(8,), max_iter=40, random_state=0), X, y)
    proto = to_onnx(clf, X[:1], options={"zipmap": False})
    onnx.checker.check_model(proto)
    labels, proba = _run(proto, X)
    np.testing.assert_array_equal(labels, clf.predict(X))
    np.testing.assert_allclose(proba, clf.predict_proba(X), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("loss", ["squared_error", "poisson"])
@pytest.mark.parametrize("n_outputs", [1, 3])
def test_regressor_converter(loss, n_outputs, iris, to_onnx):
    X, _ = iris
    Y = np.abs(X[:, :n_outputs]) / 3
    Xr = X[:, n_outputs:]
    target = Y if n_outputs > 1 else Y[:, 0]
    reg = _fit(
        MLPRegressor(loss=loss, hidden_layer_sizes=(8,), max_iter=40, random_state=0), Xr, target
    )
    proto = to_onnx(reg, Xr[:1])
    onnx.checker.check_model(proto)
    (out,) = _run(proto, Xr)
    assert out.shape == (X.shape[0], n_outputs)
    np.testing.assert_allclose(
        out.reshape(reg.predict(Xr).shape), reg.predict(Xr), rtol=1e-5, atol=1e-6
    )


def test_regressor_converter_float64(iris, to_onnx):
    X, _ = iris
    X = X.astype(np.float64)
    reg = _fit(
        MLPRegressor(hidden_layer_sizes=(8,), max_iter=40, random_state=0), X[:, 1:], X[:, 0]
    )
    (out,) = _run(to_onnx(reg, X[:1, 1:]), X[:, 1:])
    assert out.dtype == np.float64
    np.testing.assert_allclose(out[:, 0], reg.predict(X[:, 1:]), rtol=1e-12, atol=1e-12)


def test_without_the_extra_export_names_it(monkeypatch):
    monkeypatch.setattr(fonnx, "onnx", None)
    monkeypatch.setitem(sys.modules, "onnx", None)  # "import onnx" raises ImportError
    with pytest.raises(ImportError, match=r"fastnn\[onnx\]"):
        fonnx.to_model(fnn.Sequential(fnn.Linear(3, 2)))


@pytest.mark.slow
def test_import_defers_onnx_and_registers_when_skl2onnx_is_imported():
    """``import fastnn.onnx`` imports neither onnx nor skl2onnx (about 1 s together); the
    drop-ins' converters are registered when skl2onnx is imported afterwards."""
    pytest.importorskip("skl2onnx", reason="skl2onnx (the onnx extra) not installed")
    script = textwrap.dedent(
        """
        import sys, warnings
        import numpy as np
        import fastnn.onnx as fonnx
        from fastnn.sklearn import MLPClassifier
        assert "onnx" not in sys.modules and "skl2onnx" not in sys.modules, "imported early"
        X = np.random.default_rng(0).random((40, 4)).astype(np.float32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf = MLPClassifier(hidden_layer_sizes=(5,), max_iter=3).fit(X, np.arange(40) % 3)
        import skl2onnx
        model = skl2onnx.to_onnx(clf, X[:1])
        print(fonnx.SKL2ONNX_REGISTERED, type(model).__name__)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "ModelProto"]
