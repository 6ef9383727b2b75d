"""Persona inference and persona tailoring (Balepur et al., ACL 2025, "Whose Boat Does it Float?").

Explain each preference by the user behind it (`inference`: a chosen and a rejected persona per pair),
check the explanations (`accuracy`: persona accuracy, persona preferences, word saliency), then
answer prompts for a given persona (`generation`: gold, retrieved, system or no personas;
`retrieval`: the most similar training prompt's persona). Pairs and their readers live in `pairs`.
"""
