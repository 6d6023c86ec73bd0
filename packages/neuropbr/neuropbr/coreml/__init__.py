"""Core ML conversion of the students and Core ML (or PyTorch reference) inference."""
