"""What the benchmarks share, one module per concern; no benchmark imports another's command.

servers.py          a server to measure: configurations, start to ready, CPU time, idle
baseline_server.py  the plain FastAPI endpoint every sweep compares with (its own process)
load.py             the closed-loop HTTP load generator (one body, or an order of many)
sweep.py            run_all's configurations and sweeps of client counts against servers
targets.py          docs/PERFORMANCE.md's targets judged on a sweep
machine.py          the machine a result was measured on
results.py          where results go and how one is written (with its machine and command)
memory.py           a process's peak resident memory over an interval
timing.py           work timed in process (the median of repeated runs)
rounds.py           the order of side-by-side rounds (A B B A ...)
images.py           the benchmark inputs (real photographs, a 12 MP JPEG, many distinct variants)
plot.py             a sweep as a picture
"""
