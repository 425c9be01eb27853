import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared")
HH_RLHF = os.path.abspath(os.path.join(SHARED, "data", "hh-rlhf", "harmless-base-test-first1800.jsonl.gz"))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def torch_one_thread():
    """One torch thread for a whole test module: on a shared CPU, spinning OpenMP threads cost ~10x."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def hh_path():
    if not os.path.exists(HH_RLHF):
        pytest.fail(f"shared hh-rlhf data not found at {HH_RLHF} (expected ../shared beside the checkout)")
    return HH_RLHF


@pytest.fixture
def tiny_lm():
    from rlhaif.models.tiny import make_tiny_causal_lm

    return make_tiny_causal_lm("llama")


@pytest.fixture
def live_server():
    """``start(app) -> base URL``: serve an ASGI app with uvicorn in a thread on a free loopback port
    (the annotation-app tests); every server started is stopped at teardown."""
    import threading
    import time

    import uvicorn

    running = []

    def start(app) -> str:
        srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error"))
        th = threading.Thread(target=srv.run, daemon=True)
        th.start()
        running.append((srv, th))
        deadline = time.monotonic() + 60
        while not srv.started:
            assert th.is_alive() and time.monotonic() < deadline, "the test server did not start"
            time.sleep(0.05)
        port = srv.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    yield start
    for srv, th in running:
        srv.should_exit = True
        th.join(timeout=10)


@pytest.fixture
def crash_after_logging(monkeypatch):
    """``crash_after_logging(step)``: the next training run dies right after writing its metrics row of
    ``step`` (before that step's checkpoint), as a kill would; ``crash_after_logging(None)`` undoes it."""
    from rlhaif import metrics

    real = metrics.MetricsLogger.log

    def arm(step):
        def log(self, s, row, advance=1):
            real(self, s, row, advance)
            if s == step:
                raise KeyboardInterrupt(f"simulated kill after logging step {s}")
        monkeypatch.setattr(metrics.MetricsLogger, "log", real if step is None else log)

    return arm

