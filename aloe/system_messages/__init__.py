"""System-message generalization (Janus, the Multifaceted Collection): a user's preferences written as a
system message; models trained on many different system messages follow unseen ones."""
