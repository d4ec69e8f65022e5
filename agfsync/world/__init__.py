"""The miniature world: procedural scenes with a scene graph, captions and TIFA-style
questions written from it, an exact oracle that reads images back, and tiny models
trained on it (docs/world.md).

Pure modules (numpy, PIL; no torch): grammar, scenes, captions, questions, oracle.
Torch modules: data, build, check (the model training and the measurements).
"""
