"""What the tests and the benchmarks both drive the service with: a real `python -m app` (or any
server) process on a free loopback port, max-pixel images generated on the fly, a
memory-limited cgroup, a burst of identical uploads.

Its own package because neither side may import the other: the tests do not import bench/ (a
benchmark's refactoring must not break the suite, and the suite must not decide what a
benchmark measures), and the benchmarks do not import tests/ (they run where pytest does not).
One copy here keeps the two from drifting apart. Never imported by app/ and never shipped: the
image copies app/ only (.dockerignore)."""
