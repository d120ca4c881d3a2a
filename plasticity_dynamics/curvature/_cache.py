"""One constructed curvature function per (loss function, configuration), held weakly.

The one-shot conveniences (``normal_spectrum``, ``hutchinson_trace``, ...) call the pure-function
constructors (``normal_spectrum_fn``, ...). Building a new function every call would retrace and
recompile every call, so the constructed function is cached per loss function. The cache holds
the loss function *weakly* (the constructed function sees it through a weak reference), so a
loss function that goes out of scope frees its compiled kernels; a fresh closure per call
(``lambda p: loss(p, x, y)``) still compiles per call: pass the batch through ``args`` instead.
"""

from __future__ import annotations

import weakref

_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _weak_call(loss_fn):
    ref = weakref.ref(loss_fn)

    def call(*a, **kw):
        fn = ref()
        if fn is None:  # pragma: no cover - the cache entry dies with the function
            raise ReferenceError("the loss function of this curvature kernel was freed")
        return fn(*a, **kw)

    return call


def cached(ctor, loss_fn, **config):
    """``ctor(loss_fn, **config)``, built once per (loss_fn, ctor, config) while loss_fn lives.
    Loss functions that cannot be weakly referenced (or hashed) are not cached."""
    key = (ctor.__name__, tuple(sorted(config.items())))
    try:
        per = _CACHE.setdefault(loss_fn, {})
    except TypeError:
        return ctor(loss_fn, **config)
    if key not in per:
        per[key] = ctor(_weak_call(loss_fn), **config)
    return per[key]
