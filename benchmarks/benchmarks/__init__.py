"""fastxent's asv benchmarks: see ../README.md (workloads of shared/BENCHMARKS.md)."""
