"""Network-namespace topologies for live tests and benchmarks (DESIGN.md: testbed/)."""
