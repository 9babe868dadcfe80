"""chat-bench and the benchmark suite."""
