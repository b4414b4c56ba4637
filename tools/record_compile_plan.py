"""Record the call trees of fastnn's entry points for the compile helpers (a developer's tool).

    python tools/record_compile_plan.py            # writes kernels/compile_plan.json

Each scenario (the README's main job, every warm-up group, the drop-ins' group) runs in a
fresh process with an empty kernel cache and the helpers off; numba's compile events give,
for every compilation, the kernel, its argument types and the compilations nested in it.
An entry point that compiled for MIN_PLAN_SECONDS or more gets a plan: its callees in the
order the calling process compiles them, with the seconds each took (a helper starts where
the rest of the work is as long as what comes before), then the entry points the scenario
compiled next (up to FOLLOW_SECONDS of them, e.g. the kernels that evaluate the validation
data after the first epoch).
Run it after changing what a kernel calls or the types it passes; a stale plan costs speed,
never correctness (see fastnn._compile_helper).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from numba.core import event

import fastnn.sklearn  # noqa: F401  (the drop-ins' kernels join the registry)
from fastnn import _compile_helper as helper

DROP_IN = (
    "from sklearn.datasets import load_digits; from fastnn.sklearn import MLPClassifier; "
    "X, y = load_digits(return_X_y=True); X = X.astype('{dtype}'); "
    "clf = MLPClassifier(max_iter=20).fit(X, y); clf.predict(X); clf.score(X, y)"
)
#: what users run first come first: the first scenario to record an entry point's plan wins
SCENARIOS = {
    "train": "from fastnn.__main__ import main; main(['train', '--epochs', '1'])",
    "dropin-digits-float64": DROP_IN.format(dtype="float64"),
    "dropin-digits-float32": DROP_IN.format(dtype="float32"),
    "dropin-float64": "from fastnn.__main__ import _dropin_group; _dropin_group('float64')",
    "dropin-float32": "from fastnn.__main__ import _dropin_group; _dropin_group('float32')",
}
# a user's first parallel fit runs the serial build by address while a helper compiles the
# parallel one (fastnn._fastpath.FastEpochRunner._parallel_build): that build's call tree
STAND_IN = (
    "from fastnn import _fastpath, _warmup; "
    "_fastpath.can_background = lambda kernel, sig: True; "
    "_fastpath.background = lambda kernel, sig: None; "
    "_warmup._{kind}('{dtype}')()"
)
for _kind in ("data_parallel", "units"):
    for _dtype in ("float32", "float64"):
        SCENARIOS[f"stand-in-{_kind}-{_dtype}"] = STAND_IN.format(kind=_kind, dtype=_dtype)
GROUPS = 8  # fastnn._warmup.groups(all=True) on two or more threads
FOLLOW_SECONDS = 6.0


class _Tree(event.Listener):
    """Nested compilations as a tree of [name, argument texts, seconds, children]."""

    def __init__(self):
        self.stack = []
        self.roots = []

    def on_start(self, ev):
        args = [helper.type_text(a) for a in ev.data.get("args", ())]
        name = helper.kernel_name(ev.data.get("dispatcher"))
        self.stack.append([name, args, time.perf_counter(), []])

    def on_end(self, ev):
        node = self.stack.pop()
        node[2] = time.perf_counter() - node[2]
        (self.stack[-1][3] if self.stack else self.roots).append(node)


def run_scenario(code):
    tree = _Tree()
    event.register("numba:compile", tree)
    exec(code, {"__name__": "scenario"})
    json.dump(tree.roots, sys.__stdout__)


def post_order(root, include_root=False):
    """The root's callees in the order numba compiles them (each after its own callees; the
    root itself last when ``include_root``), as [name, argument texts, seconds, depth]: its own
    seconds (its compile less its callees') and its depth in the call tree (the root's callees
    at 1), from which a helper tells which callees lie below which."""
    out, seen = [], set()

    def visit(node, depth):
        for child in node[3]:
            visit(child, depth + 1)
        key = (node[0], tuple(a or "" for a in node[1]))
        if (node is root and not include_root) or key in seen or None in node[1]:
            return
        if "<locals>" in node[0] or not node[0].startswith("fastnn."):
            return
        seen.add(key)
        own = node[2] - sum(child[2] for child in node[3])
        out.append([node[0], node[1], round(max(0.0, own), 3), depth])

    visit(root, 0)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(helper.PLAN_FILE))
    args = parser.parse_args()
    if args.scenario:
        run_scenario(args.scenario)
        return
    scenarios = dict(SCENARIOS)
    for i in range(GROUPS):
        scenarios[f"group-{i}"] = (
            f"from fastnn._warmup import groups; g = groups(all=True); "
            f"g[{i}][1]() if len(g) > {i} else None"
        )
    plans = {}
    for name, code in scenarios.items():
        with tempfile.TemporaryDirectory() as cache:
            env = {**os.environ, "NUMBA_CACHE_DIR": cache, helper.ENV_WORKERS: "0"}
            t0 = time.perf_counter()
            out = subprocess.run(
                [sys.executable, __file__, "--scenario", code],
                env=env,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        roots = json.loads(out.strip().splitlines()[-1])
        print(f"{name}: {time.perf_counter() - t0:.1f} s, {len(roots)} entry points", flush=True)
        for k, root in enumerate(roots):
            if root[2] < helper.MIN_PLAN_SECONDS or None in root[1] or not post_order(root):
                continue  # (nothing to share: its callees were cached by an earlier entry)
            key = (root[0], tuple(root[1]))
            then, followed = [], 0.0
            for later in roots[k + 1 :]:
                if followed + later[2] > FOLLOW_SECONDS:
                    break
                followed += later[2]
                then += [item[:2] for item in post_order(later, include_root=True)]
            if key not in plans:
                plans[key] = {
                    "entry": root[0],
                    "args": root[1],
                    "seconds": round(root[2], 1),
                    "callees": post_order(root),
                    "then": then,
                }
    registry = helper._registry()  # a helper finds kernels by module attribute: keep those
    for plan in plans.values():
        plan["callees"] = [item for item in plan["callees"] if item[0] in registry]
        plan["then"] = [item for item in plan["then"] if item[0] in registry]
    data = {"version": helper.PLAN_VERSION, "plans": list(plans.values())}
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    print(f"{len(plans)} plans written to {args.out}")


if __name__ == "__main__":
    main()
