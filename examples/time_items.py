"""Time tinyconv's side of bench items in one process: wall and CPU medians, to A/B two source trees.

    PYTHONPATH=<tree> python examples/time_items.py vgg16:forward:1:3 mnist-cnn:train:128:10

For each ``arch:work:batch:reps``: ``bench.tinyconv_work`` on ``bench.build_net(arch)``, one
warm-up, then ``reps`` repetitions, each after a 0.05 s pause; prints the median wall and CPU
(``time.process_time``) milliseconds. CPU time is the one to read with one BLAS thread on a
machine busy with other jobs, where wall time measures the scheduler's share. Run the same
command from two trees in turn (A B A B ...) to compare them.
"""

import statistics
import sys
import time

from tinyconv.tools import bench


def main(specs):
    for spec in specs:
        arch, work, batch, reps = spec.split(":")
        item = bench.Item(arch, work, int(batch), int(reps))
        fn = bench.tinyconv_work(item, bench.build_net(arch))
        fn()
        wall, cpu = [], []
        for _ in range(int(reps)):
            time.sleep(0.05)
            t, c = time.perf_counter(), time.process_time()
            fn()
            wall.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        print(f"{arch} {work} b{batch}: wall_ms {statistics.median(wall) * 1e3:.1f} "
              f"cpu_ms {statistics.median(cpu) * 1e3:.1f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:])
