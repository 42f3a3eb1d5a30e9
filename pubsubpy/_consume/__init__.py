"""The consumer behind ``drain()`` and ``run()``: the loop (``loop.py``), the executors that run
handlers (``_consume/executor.py``, ``caller_thread.py``, ``thread_pool.py``), settling copies, backoff. Private:
the API is ``PubSub``."""
