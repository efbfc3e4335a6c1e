"""The embedded default: a random base model in the release layout (`tiny_base`) and two Hungarian
demo corpora (`corpora`, with their text in `text`)."""
