"""One process of test_streaming's two-process fit (run as a script).

argv: process id, coordinator port, the tests directory. Each process has 2
CPU devices and passes its own rows (alternate blocks of ``b``); the fit must
equal one process fitting all rows with batches of ``2 b``.
"""

import os
import sys


def main(pid: int, port: str, tests: str) -> None:
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    import jax
    import numpy as np

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=pid)
    sys.path.insert(0, tests)
    from conftest import PARAMS, TX, loss, make_data

    import jaxfit

    x, y = make_data(1024)
    b = 32  # rows per process per step
    mine = (np.arange(1024) // b) % 2 == pid
    mesh = jax.make_mesh((4,), ("batch",))
    kw = dict(epochs=2, shuffle=False, chunk_batches=4, progress=False)
    data = (x[mine], y[mine])
    result = jaxfit.fit(loss, TX, PARAMS, data, batch_size=b, mesh=mesh, **kw)
    single = jaxfit.fit(loss, TX, PARAMS, (x, y), batch_size=2 * b, **kw)
    for a, s in zip(*map(jax.tree.leaves, (result.params, single.params)), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(s), rtol=1e-5, atol=1e-6)
    print("ok", pid, jax.process_count(), jax.device_count())


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3])
