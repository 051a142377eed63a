"""Load and latency benchmarking for the PolyAI Chat API across regions and variants."""

__version__ = "0.1.0"
