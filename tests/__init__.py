"""The tests, one folder per layer of the package (docs/architecture.md), plus benchmarks, scripts,
docs and the package as a whole; fixtures/ holds files only the tests read."""
