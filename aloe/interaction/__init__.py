"""ALOE (interaction): persona pools, tree-structured multi-turn preference conversations, and the
multi-turn evaluation in which a simulated user talks with the model under test."""
