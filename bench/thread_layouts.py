"""One batch on every thread, or one batch per thread side by side? Forward passes only, in process.

Usage: .venv/bin/python bench/thread_layouts.py [torch|onnxruntime|int8] [SECONDS] [BATCH]   (default torch 5 8)

For each layout it runs batches of BATCH (the 451x300 bench photo) for SECONDS and prints img/s, first alone,
then with one thread decoding that photo every 8 ms beside it (roughly what the server's decode threads add
at 32 clients). `torch` changes the thread count per call; the ONNX Runtime backends get one session per
worker, each sized for its layout. Seeded random weights; speed does not depend on their values. For torch a
third column repeats the first with another thread's OpenMP team left idle beside it (see below).

Loading and warm-up run on threads that end, as in the server: libgomp keeps an OpenMP worker team for every
thread that ever led one, and more workers than cores make every team sleep between operators (throttled
wait), which slows the "1 batch x N threads" layout (at batch 1 on 2 cores, 15.0-15.6 vs 16.9-17.5 img/s).
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from inprocess import load_backend
from run import make_images, make_weights

from resnet_api.inference import preprocess
from resnet_api.inference.backends import Backend, on_passing_thread
from resnet_api.settings import Settings, available_cpus


def main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else "torch"
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 5.0
    size = int(sys.argv[3]) if len(sys.argv) > 3 else 8
    cpus = available_cpus()
    weights = make_weights(Path(tempfile.gettempdir()))
    data = make_images()["451x300"]

    def crop() -> object:
        return preprocess.to_pixels(preprocess.decode(data, max_pixels=10**9, draft=True).image)

    batch = preprocess.model_batch([crop()] * size)  # type: ignore[list-item]

    def backend(threads: int) -> Backend:
        return load_backend(Settings(weights=str(weights), backend=name, torch_threads=threads), weights)  # type: ignore[arg-type]

    # (label, [(backend, threads per call)]): torch shares one backend; ONNX Runtime needs a session per size.
    shared = backend(cpus)
    layouts = {
        f"1 batch x {cpus} threads": [(shared, cpus)],
        f"{cpus} batches x 1 thread": [(shared if name == "torch" else backend(1), 1) for _ in range(cpus)],
    }

    def rate(workers: list[tuple[Backend, int]], decoding: bool) -> float:
        stop, done = threading.Event(), [0] * len(workers)

        def work(i: int) -> None:
            model, threads = workers[i]
            while not stop.is_set():
                model.run(batch, threads)
                done[i] += size

        def decode() -> None:
            while not stop.is_set():
                crop()
                time.sleep(0.008)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(workers))]
        if decoding:
            threads.append(threading.Thread(target=decode))
        started = time.perf_counter()
        for t in threads:
            t.start()
        time.sleep(seconds)
        stop.set()
        for t in threads:
            t.join()
        return sum(done) / (time.perf_counter() - started)

    for workers in layouts.values():
        for model, threads in workers:
            on_passing_thread(lambda model=model, threads=threads: model.run(batch, threads))  # warm-up
    print(f"{name}, batches of {size}, {cpus} CPUs, {seconds:.0f} s per cell (img/s)")
    for decoding in (False, True):
        cells = [f"{label}: {rate(workers, decoding):5.1f}" for label, workers in layouts.items()]
        if name == "torch" and cpus > 1:
            # What the server did before its lone batches got a model thread of their own: another thread's
            # team waits idle, the workers outnumber the cores, and libgomp throttles every team's spinning.
            with ThreadPoolExecutor(max_workers=1) as other:
                other.submit(shared.run, batch, cpus).result()
                cells.append(f"1 x {cpus}, a 2nd team idle: {rate([(shared, cpus)], decoding):5.1f}")
        print(f"  {'with a decode thread' if decoding else 'forward only        '}  " + "   ".join(cells), flush=True)


if __name__ == "__main__":
    main()
