"""Evaluation: fidelity, variety, complexity, memorization/privacy and utility of a synthetic
dataset against the real one it was trained on. Every number here is an input to the gates."""
