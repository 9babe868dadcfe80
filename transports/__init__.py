"""Wire dialects shared by relay and clients: sans-I/O codecs plus thin I/O."""
