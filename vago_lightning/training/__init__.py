"""Running training: the command line (`cli`), checkpoints and resume (`checkpoints`), the NaN and
divergence guard (`guard`), the pre-flight checks (`preflight`) and the other callbacks."""
