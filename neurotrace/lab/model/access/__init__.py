"""How to reach inside a loaded model: one adapter table, the site grammar, the one hook entry point,
the target-token rule, neuron references and the word-level tokenizer builder."""
