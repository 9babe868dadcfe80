"""Long-running soak test of a real relay (`make soak`)."""
