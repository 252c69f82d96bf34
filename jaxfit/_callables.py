"""Caches keyed by the user's callables that never keep them alive.

jaxfit compiles one program per user function (a model, a loss, a residual
function, a chain). ``jax.jit`` with the function as a static argument, or an
``functools.lru_cache`` keyed by it, has two faults: the function must be
hashable (a dataclass instance with ``__call__`` is not, though ``jax.jit``
accepts it), and the cache holds the function, and every array it closes
over, until the cache evicts it. Here a function is keyed by its identity and
held through a weak reference; the compiled program calls it through a
:class:`WeakCallable`, and the cache entry goes when the function goes, as a
plain ``jax.jit(f)`` does.
"""

from __future__ import annotations

import collections
import inspect
import threading
import weakref
from collections.abc import Callable, Hashable
from typing import Any

# Objects that take no weak reference (rare: some builtins and C callables)
# are held strongly, in at most this many entries (least recently used go).
_MAX_STRONG = 16


def _reference(obj: Any, callback: Callable) -> Callable[[], Any]:
    """A weak reference to ``obj`` (a ``WeakMethod`` for a bound method, whose
    object is made anew at each attribute access), or a strong one."""
    try:
        if inspect.ismethod(obj):
            return weakref.WeakMethod(obj, callback)
        return weakref.ref(obj, callback)
    except TypeError:
        return lambda: obj


def identity(obj: Any) -> Hashable:
    """A key equal for the same object (and for the same method of the same
    object), whatever the object's own ``__eq__`` and ``__hash__``."""
    if inspect.ismethod(obj):
        return ("method", id(obj.__self__), id(obj.__func__))
    return id(obj)


class WeakCallable:
    """Calls ``fn`` through a weak reference; raises once ``fn`` is gone.

    Programs compiled for a user's function close over this instead of the
    function. ``inspect.signature`` sees the function's signature.
    """

    __slots__ = ("__weakref__", "_ref")

    def __init__(self, fn: Callable, ref: Callable[[], Any] | None = None):
        self._ref = ref if ref is not None else _reference(fn, None)

    def target(self) -> Callable:
        fn = self._ref()
        if fn is None:
            raise ReferenceError("the function this program was compiled for is gone")
        return fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.target()(*args, **kwargs)

    @property
    def __signature__(self) -> inspect.Signature:
        return inspect.signature(self.target())

    def __repr__(self) -> str:
        return f"WeakCallable({self._ref()!r})"


class CallableCache:
    """``build(*proxies, *static)`` memoised per identity of ``objs``.

    ``get(objs, static, build)``: ``objs`` are user objects (callables or
    None), ``static`` a hashable tuple. ``build`` receives a
    :class:`WeakCallable` (or None) in place of each object, so what it
    returns holds no strong reference to them; the entry is dropped as soon
    as any of the objects is garbage collected.

    Example:
      >>> cache = CallableCache()
      >>> f = lambda x: 2 * x
      >>> program = cache.get((f,), (), lambda g: (lambda x: g(x) + 1))
      >>> program(3), cache.get((f,), (), None) is program
      (7, True)
      >>> del f
      >>> len(cache)
      0
    """

    def __init__(self) -> None:
        self._entries: dict[Hashable, Any] = {}
        self._strong: collections.OrderedDict = collections.OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, objs: tuple, static: tuple, build: Callable) -> Any:
        key = (tuple(identity(o) for o in objs), static)
        with self._lock:
            entry = self._entries.get(key)
            # The entry keeps its references alive (a dead weak reference
            # never calls back), and they must still point at these objects.
            if entry is not None and all(
                o is None or r() is o or identity(r()) == identity(o)
                for o, r in zip(objs, entry[1], strict=True)
            ):
                if key in self._strong:
                    self._strong.move_to_end(key)
                return entry[0]
        drop = lambda _ref, key=key, entries=self._entries: entries.pop(key, None)
        proxies, refs, strong = [], [], False
        for obj in objs:
            ref = None if obj is None else _reference(obj, drop)
            refs.append(ref)
            if obj is None:
                proxies.append(None)
                continue
            strong |= not isinstance(ref, weakref.ref)
            proxies.append(WeakCallable(obj, ref))
        value = build(*proxies, *static)
        with self._lock:
            self._entries[key] = (value, refs)
            if strong:
                self._strong[key] = None
                while len(self._strong) > _MAX_STRONG:
                    self._entries.pop(self._strong.popitem(last=False)[0], None)
        return value
