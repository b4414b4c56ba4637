"""Calling a compiled kernel by address, without linking its code into the caller.

numba links every callee's code into its caller and optimises and generates it again there:
a fit driver compiled each of its passes a second time, and a parallel build once more per
parallel loop.  ``call_at`` calls the callee's own machine code through an address the caller
receives as an argument, so compiling the caller compiles the caller's code and nothing more
(a cold first fit of 784-100-10@64: the parallel driver's own compile went from 14 s to 2.6 s).
The callee is still typed and compiled as any callee (the caller's typing compiles it first),
and on-disk caching is unchanged: an address is never part of compiled code.

``Driver`` is the Python side: it compiles (or loads) the caller and each callee, and passes
the callees' addresses with, for each, ``signature_check`` of its name and types; the caller
compares that with the check of the build it was compiled against and raises RuntimeError
rather than call another function or a build for other types.
"""

import zlib

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

#: the type of the addresses argument
POINTERS = types.Array(types.int64, 1, "C")


def signature_check(name, signature):
    """A number that names a build: the function's qualified name, its argument types and its
    return type (``call_at`` compares it with the one its caller was compiled for)."""
    text = f"{name}({', '.join(str(t) for t in signature.args)}) -> {signature.return_type}"
    return zlib.crc32(text.encode())


@intrinsic
def call_at(typingctx, pointers, index, function, *args):
    """``function(*args)`` (``function`` a numba dispatcher, typed and compiled for these
    arguments as a plain call would be), called through the address ``pointers[2 * index]``
    (see the module docstring).  ``pointers[2 * index + 1]`` must hold ``signature_check``
    of the build at that address: a caller given an address of another build raises
    RuntimeError instead of calling it.  Exceptions of the callee propagate as from any
    call."""
    if not isinstance(function, types.Dispatcher) or not isinstance(pointers, types.Array):
        return None
    if not isinstance(index, types.Integer):
        return None
    sig = function.get_call_type(typingctx, tuple(types.unliteral(a) for a in args), {})
    if sig is None:
        return None
    callee = function.dispatcher.overloads[tuple(sig.args)].signature
    check = signature_check(function.dispatcher.py_func.__qualname__, callee)

    def codegen(context, builder, signature, llargs):
        given = cgutils.unpack_tuple(builder, llargs[3])
        values = [
            context.cast(builder, v, t, to)
            for v, t, to in zip(given, signature.args[3].types, callee.args, strict=True)
        ]
        i64 = ir.IntType(64)
        ptrs = context.make_array(signature.args[0])(context, builder, llargs[0])
        slot = builder.mul(context.cast(builder, llargs[1], signature.args[1], types.int64), i64(2))
        addr = builder.load(builder.gep(ptrs.data, [slot]))
        found = builder.load(builder.gep(ptrs.data, [builder.add(slot, i64(1))]))
        with builder.if_then(builder.icmp_signed("!=", found, i64(check)), likely=False):
            context.call_conv.return_user_exc(
                builder, RuntimeError, ("fastnn: a pass address of another build",)
            )
        fnty = context.call_conv.get_function_type(callee.return_type, callee.args)
        fn = builder.inttoptr(addr, fnty.as_pointer())
        status, res = context.call_conv.call_function(
            builder, fn, callee.return_type, callee.args, values
        )
        with cgutils.if_unlikely(builder, status.is_error):
            context.call_conv.return_status_propagate(builder, status)
        return res

    packed = types.StarArgTuple.from_types(args)
    return callee.return_type(pointers, index, function, packed), codegen


class Driver:
    """A compiled kernel that calls others by address, as Python calls it: ``driver(*args)``
    runs ``jit(pointers, *args)``, ``pointers`` holding the addresses of ``passes`` (in the
    order of the ``call_at`` indices in ``jit``).  ``pass_types(kernel, types)`` gives the
    argument types ``jit`` calls the pass ``kernel`` with when its own arguments (after
    ``pointers``) have numba types ``types``."""

    def __init__(self, jit, passes, pass_types):
        self.jit = jit
        self.passes = passes
        self.pass_types = pass_types
        self._pointers = {}

    def signature(self, args):
        """The numba argument types of ``jit`` for a call with ``args``."""
        return (POINTERS, *(self.jit.typeof_pyval(a) for a in args))

    def pointers(self, sig):
        """The pass addresses for the build of ``jit`` with argument types ``sig``, compiling
        (or loading) it first: its typing compiles the passes, as any callee's."""
        found = self._pointers.get(sig)
        if found is None:
            self.jit.compile(sig)
            found = np.empty(2 * len(self.passes), np.int64)
            for i, kernel in enumerate(self.passes):
                argtypes = self.pass_types(kernel, sig[1:])
                kernel.compile(argtypes)
                cres = kernel.overloads[argtypes]
                address = cres.library.get_pointer_to_function(cres.fndesc.llvm_func_name)
                if not address:
                    raise RuntimeError(f"fastnn: no machine code for {cres.fndesc.qualname}")
                found[2 * i] = address
                found[2 * i + 1] = signature_check(kernel.py_func.__qualname__, cres.signature)
            self._pointers[sig] = found
        return found

    def __call__(self, *args):
        sig = self.signature(args)
        return self.jit(self.pointers(sig), *args)
