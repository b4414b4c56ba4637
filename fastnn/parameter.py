"""Parameter: a trainable array and its gradient."""

import numpy as np


class Parameter:
    """A trainable array ``data`` with its gradient ``grad`` (same shape and dtype).

    Inside a :class:`~fastnn.Sequential` both arrays are views into one flat buffer per model,
    so an optimizer updates every parameter in one kernel call.  Write into ``data[...]`` to
    change the model; rebinding ``data`` to a new array detaches it from that buffer.
    """

    __slots__ = ("data", "grad", "name", "_flat")

    def __init__(self, data: np.ndarray, name: str = "") -> None:
        self.data = np.ascontiguousarray(data)
        self.grad = np.zeros_like(self.data)
        self.name = name
        self._flat = None  # (owner, offset) once a model packs its parameters into one buffer

    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def size(self):
        return self.data.size

    def zero_grad(self) -> None:
        self.grad[...] = 0

    def __repr__(self):
        label = f"{self.name}, " if self.name else ""
        return f"Parameter({label}shape={self.data.shape}, dtype={self.data.dtype})"


class FlatParameters:
    """One contiguous data buffer and one gradient buffer holding many Parameters as views."""

    def __init__(self, params):
        params = list(params)
        dtypes = {p.dtype for p in params}
        if len(dtypes) > 1:
            raise TypeError(
                f"all parameters of a model must share one dtype, got {sorted(map(str, dtypes))}"
            )
        dtype = dtypes.pop() if dtypes else np.dtype(np.float32)
        total = sum(p.size for p in params)
        self.data = np.empty(total, dtype=dtype)
        self.grad = np.zeros(total, dtype=dtype)
        self.params = params
        offset = 0
        for p in params:
            n = p.size
            self.data[offset : offset + n] = p.data.ravel()
            self.grad[offset : offset + n] = p.grad.ravel()
            p.data = self.data[offset : offset + n].reshape(p.shape)
            p.grad = self.grad[offset : offset + n].reshape(p.shape)
            p._flat = (self, offset)
            offset += n

    def relink(self):
        """Make the parameters this buffer owns views into it again, their values copied in
        (pickling copies a view out as an array of its own: an unpickled model's parameters
        would otherwise have left the buffer, and with it fit's compiled fast path and
        predict's row split).  The buffer arrays stay the same objects, so an optimizer
        pickled together with the model keeps updating its parameters."""
        for p in self.params:
            if p._flat is None or p._flat[0] is not self:
                continue  # taken into another model's buffer since
            offset, n = p._flat[1], p.size
            data, grad = self.data[offset : offset + n], self.grad[offset : offset + n]
            if not np.shares_memory(p.data, self.data):
                data[...] = p.data.ravel()
                p.data = data.reshape(p.shape)
            if not np.shares_memory(p.grad, self.grad):
                grad[...] = p.grad.ravel()
                p.grad = grad.reshape(p.shape)

    @staticmethod
    def slice_of(params):
        """(data, grad) flat views covering ``params`` if they are one consecutive run of a
        single FlatParameters buffer, in order; otherwise None."""
        if not params or params[0]._flat is None:
            return None
        owner, start = params[0]._flat
        offset = start
        for p in params:
            if p._flat is None or p._flat[0] is not owner or p._flat[1] != offset:
                return None
            if not np.shares_memory(p.data, owner.data):
                return None  # .data was rebound by the user
            offset += p.size
        return owner.data[start:offset], owner.grad[start:offset]
