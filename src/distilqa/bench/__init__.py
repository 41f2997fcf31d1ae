"""Speed benchmarks: scripts whose figures go into docs/ and closing notes."""
