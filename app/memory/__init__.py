"""Memory: the budget mechanism (`budget`), the request-body budget and its measured factors
(`bodies`), and the container's memory limit and resident size (`cgroup`)."""
