"""The per-callable cache: keyed by identity, never keeping a callable alive."""

from __future__ import annotations

import dataclasses
import gc
import weakref

from jaxfit._callables import CallableCache


def test_a_new_callable_at_a_reused_address_gets_its_own_entry():
    """CPython reuses a freed object's address (its id): the entry of a
    dropped function must go with it, or a new one would get its program."""

    def constant(i):
        return lambda x: i

    cache = CallableCache()
    for i in range(500):
        f = constant(i)
        assert cache.get((f,), (), lambda g: g(None)) == i
        del f
    assert len(cache) == 0


def test_unhashable_callables_and_bound_methods_are_cached_and_released():
    @dataclasses.dataclass
    class Model:  # eq=True: not hashable
        scale: float

        def __call__(self, x):
            return self.scale * x

        def half(self, x):
            return self.scale * x / 2

    cache = CallableCache()
    model = Model(2.0)
    builds = []

    def build(fn):
        builds.append(fn)
        return lambda x: fn(x) + 1

    assert cache.get((model,), (), build)(3.0) == 7.0
    assert cache.get((model,), (), build)(3.0) == 7.0
    # a bound method is a new object at each access, but the same key
    assert cache.get((model.half,), (), build)(4.0) == 5.0
    assert cache.get((model.half,), (), build)(4.0) == 5.0
    assert len(builds) == 2
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None and len(cache) == 0
